// Vary (Region)'s editor: mark a region of the image (brush, rectangle, lasso; undo),
// edit the prompt, and send the region as a mask (white = repaint, black = keep) at the
// image's own size. The page's address is its link: everything it fetches is under it.
"use strict";

(() => {
  const base = window.location.pathname.replace(/\/+$/, "");
  const $ = (id) => document.getElementById(id);
  const picture = $("picture");
  const overlay = $("overlay");
  const status = $("status");
  const size = $("brush-size");
  const undoButton = $("undo");
  const submitButton = $("submit");
  // The region as painted: white where it repaints, transparent elsewhere, at the
  // image's size. The overlay shows it tinted over the picture.
  const mask = document.createElement("canvas");
  const undos = [];
  const MAX_UNDOS = 50;
  const TINT = "rgba(0, 210, 255, 0.6)";
  const DISPLAY_WIDTH = 640;
  let tool = "brush";
  let stroke = null;

  function say(text, error = false) {
    status.textContent = text;
    status.classList.toggle("error", error);
  }

  function point(event) {
    const box = overlay.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * mask.width) / box.width,
      y: ((event.clientY - box.top) * mask.height) / box.height,
    };
  }

  function paint() {
    const ctx = mask.getContext("2d");
    ctx.fillStyle = "white";
    ctx.strokeStyle = "white";
    return ctx;
  }

  function show(preview) {
    const ctx = overlay.getContext("2d");
    ctx.globalCompositeOperation = "source-over";
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    ctx.drawImage(mask, 0, 0);
    ctx.globalCompositeOperation = "source-in";
    ctx.fillStyle = TINT;
    ctx.fillRect(0, 0, overlay.width, overlay.height);
    ctx.globalCompositeOperation = "source-over";
    if (preview) {
      ctx.strokeStyle = "white";
      ctx.lineWidth = Math.max(1, mask.width / 256);
      ctx.setLineDash([4, 3]);
      preview(ctx);
      ctx.setLineDash([]);
    }
  }

  function remember() {
    undos.push(mask.getContext("2d").getImageData(0, 0, mask.width, mask.height));
    if (undos.length > MAX_UNDOS) undos.shift();
    undoButton.disabled = false;
  }

  function undo() {
    const last = undos.pop();
    if (last) mask.getContext("2d").putImageData(last, 0, 0);
    undoButton.disabled = undos.length === 0;
    show();
  }

  function dab(from, to) {
    const ctx = paint();
    ctx.lineWidth = Number(size.value);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
  }

  function rectangle(from, to) {
    return [Math.min(from.x, to.x), Math.min(from.y, to.y), Math.abs(to.x - from.x), Math.abs(to.y - from.y)];
  }

  function trace(ctx, points) {
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
  }

  function down(event) {
    if (event.button !== 0) return;
    overlay.setPointerCapture(event.pointerId);
    const at = point(event);
    remember();
    stroke = { start: at, last: at, points: [at] };
    if (tool === "brush") dab(at, at);
    show();
  }

  function move(event) {
    if (!stroke) return;
    const at = point(event);
    if (tool === "brush") {
      dab(stroke.last, at);
      show();
    } else if (tool === "rect") {
      show((ctx) => ctx.strokeRect(...rectangle(stroke.start, at)));
    } else {
      stroke.points.push(at);
      show((ctx) => {
        trace(ctx, stroke.points);
        ctx.stroke();
      });
    }
    stroke.last = at;
  }

  function up(event) {
    if (!stroke) return;
    const at = point(event);
    const ctx = paint();
    if (tool === "rect") {
      ctx.fillRect(...rectangle(stroke.start, at));
    } else if (tool === "lasso") {
      stroke.points.push(at);
      trace(ctx, stroke.points);
      ctx.closePath();
      ctx.fill();
    }
    stroke = null;
    show();
  }

  function choose(name) {
    tool = name;
    document.querySelectorAll("[data-tool]").forEach((button) => {
      button.setAttribute("aria-pressed", String(button.dataset.tool === name));
    });
  }

  function maskPng() {
    // What the engine reads: black everywhere, the painted region white.
    const out = document.createElement("canvas");
    out.width = mask.width;
    out.height = mask.height;
    const ctx = out.getContext("2d");
    ctx.fillStyle = "black";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(mask, 0, 0);
    return out.toDataURL("image/png");
  }

  async function send(event) {
    event.preventDefault();
    submitButton.disabled = true;
    say("Sending…");
    const body = {
      prompt: $("prompt").value,
      negative_prompt: $("negative").value,
      mask: maskPng(),
    };
    try {
      const response = await fetch(base, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      if (response.ok) {
        say(answer.message);
        return;
      }
      say(answer.message || "That did not work; try again.", true);
      // A link that is used or expired cannot be sent again; a bad request can.
      submitButton.disabled = response.status === 410;
    } catch (error) {
      say("The server could not be reached; try again.", true);
      submitButton.disabled = false;
    }
  }

  async function start() {
    const response = await fetch(`${base}/job`);
    const job = await response.json();
    if (!response.ok) {
      say(job.message, true);
      return;
    }
    for (const canvas of [picture, overlay, mask]) {
      canvas.width = job.width;
      canvas.height = job.height;
    }
    const shown = Math.min(DISPLAY_WIDTH, $("stage").parentElement.clientWidth);
    picture.style.width = `${shown}px`;
    size.max = String(Math.max(job.width, job.height));
    size.value = String(Math.max(2, Math.round(job.width / 12)));
    $("prompt").value = job.prompt;
    $("negative").value = job.negative_prompt;
    const image = new Image();
    image.onload = () => {
      picture.getContext("2d").drawImage(image, 0, 0);
      submitButton.disabled = false;
      say(`Image ${job.image} of job ${job.job_id}. This link works once.`);
    };
    image.onerror = () => say("The image could not be loaded; click Vary (Region) again.", true);
    image.src = `${base}/image`;
  }

  document.querySelectorAll("[data-tool]").forEach((button) => {
    button.addEventListener("click", () => choose(button.dataset.tool));
  });
  undoButton.addEventListener("click", undo);
  overlay.addEventListener("pointerdown", down);
  overlay.addEventListener("pointermove", move);
  overlay.addEventListener("pointerup", up);
  $("form").addEventListener("submit", send);
  start();
})();
