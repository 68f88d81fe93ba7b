"""/forget-me end to end, where two members' jobs share an upload."""

from __future__ import annotations

from .conftest import RunningBot
from .test_imagine import finished
from .test_modes import png
from .test_studio import click_and_finish, job_id_of


async def test_a_re_rollers_forget_me_keeps_the_upload_the_original_members_buttons_need(
    running_bot: RunningBot,
) -> None:
    bot, server = running_bot, running_bot.server
    other = server.add_member(name="other")
    ix = await server.send_slash_command(
        "imagine",
        {"prompt": "a red square", "seed": 3, "strength": 0.5},
        attachments={"image": ("photo.png", png((64, 64)), "image/png")},
    )
    job_id = job_id_of(await ix.wait_for_original(lambda m: "queued" in m.content, timeout=30))
    result = await ix.wait_for_original(finished, timeout=120)
    (upload,) = (bot.data_dir / "inputs").glob("*/image.png")
    # Another member re-rolls it: their job's spec is a copy, the upload's path included.
    await click_and_finish(bot, result, f"atelier:reroll:{job_id}", other)

    ask = await server.send_slash_command("forget-me", user_id=other)
    question = await ask.wait_for_original(timeout=5)
    (button,) = question.custom_ids
    confirm = await server.click_button(question, button, user_id=other)
    await confirm.wait_for_callback(timeout=3)
    done = await ask.wait_for_original(lambda m: "Done" in m.content, timeout=30)
    assert upload.is_file()
    # The member was told so, before and after.
    assert "An upload another member's job also uses" in question.content
    assert "1 upload(s) were kept" in done.content

    # The original member's re-roll (it reads the upload), V1 and U1 still work.
    for custom_id in (f"atelier:reroll:{job_id}", f"atelier:v:{job_id}:1", f"atelier:u:{job_id}:1"):
        _, made = await click_and_finish(bot, result, custom_id, server.user_id)
        assert len(made.attachments) == 1
