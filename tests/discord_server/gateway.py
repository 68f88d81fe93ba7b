"""The gateway websocket: HELLO, IDENTIFY/READY, RESUME, heartbeats and dispatches.

Frames go out as uncompressed text whatever `compress` the client asks for in the URL;
discord.py decodes text frames without its zlib context.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from .models import JSON
from .state import ServerState
from .world import APPLICATION_FLAGS

_log = logging.getLogger(__name__)

# Opcodes.
DISPATCH = 0
HEARTBEAT = 1
IDENTIFY = 2
PRESENCE_UPDATE = 3
VOICE_STATE_UPDATE = 4
RESUME = 6
RECONNECT = 7
REQUEST_GUILD_MEMBERS = 8
INVALID_SESSION = 9
HELLO = 10
HEARTBEAT_ACK = 11

# Intents the server honours.
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_MESSAGES = 1 << 9
MESSAGE_CONTENT = 1 << 15

HEARTBEAT_INTERVAL_MS = 41_250
_REPLAY_LIMIT = 1000


class GatewaySession:
    """A gateway session; it outlives its websocket so that the client can RESUME it."""

    def __init__(self, session_id: str, identify: JSON) -> None:
        self.session_id = session_id
        self.identify = identify
        self.intents: int = identify.get("intents", 0)
        self.ws: web.WebSocketResponse | None = None
        self.seq = 0
        self._sent: list[JSON] = []  # dispatched frames, replayed on RESUME
        self._lock = asyncio.Lock()  # keeps seq order equal to send order

    async def dispatch(self, event: str, data: JSON) -> None:
        async with self._lock:
            self.seq += 1
            frame = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
            self._sent.append(frame)
            del self._sent[:-_REPLAY_LIMIT]
            await self._send(frame)

    async def attach(self, ws: web.WebSocketResponse, after_seq: int | None) -> None:
        """Bind a (re)connected socket and replay what it missed."""
        async with self._lock:
            self.ws = ws
            if after_seq is not None:
                for frame in self._sent:
                    if frame["s"] > after_seq:
                        await self._send(frame)

    async def _send(self, frame: JSON) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            return  # kept in _sent; a RESUME delivers it
        try:
            await ws.send_str(json.dumps(frame))
        except (ConnectionError, RuntimeError):
            _log.debug("gateway send failed; frame %s kept for resume", frame.get("s"))


class Gateway:
    def __init__(self, state: ServerState, gateway_url: Callable[[], str]) -> None:
        self._state = state
        self._gateway_url = gateway_url
        self.sessions: dict[str, GatewaySession] = {}
        self.identifies: list[JSON] = []
        self.resumes: list[JSON] = []
        self._sockets: set[web.WebSocketResponse] = set()

    async def dispatch(self, event: str, data: JSON, *, intent: int | None = None) -> None:
        """Send an event to every session (that subscribed to `intent`, if given)."""
        for session in list(self.sessions.values()):
            if intent is None or session.intents & intent:
                await session.dispatch(event, data)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and RESUMEs on resume_gateway_url."""
        for ws in list(self._sockets):
            await ws.send_str(json.dumps({"op": RECONNECT, "d": None}))

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server stopping")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("encoding", "json") != "json":
            self._state.unhandled.append(f"gateway encoding={request.query['encoding']}")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        session: GatewaySession | None = None
        try:
            await ws.send_str(
                json.dumps({"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
            )
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    self._state.unhandled.append(f"gateway {msg.type.name} frame")
                    continue
                frame = json.loads(msg.data)
                session = await self._on_frame(ws, frame, session)
        finally:
            self._sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
        return ws

    async def _on_frame(
        self, ws: web.WebSocketResponse, frame: JSON, session: GatewaySession | None
    ) -> GatewaySession | None:
        op = frame.get("op")
        data: Any = frame.get("d")
        if op == HEARTBEAT:
            await ws.send_str(json.dumps({"op": HEARTBEAT_ACK}))
        elif op == IDENTIFY:
            if data.get("token") != self._state.bot_token:
                await ws.close(code=4004, message=b"Authentication failed.")
                return None
            session = GatewaySession(secrets.token_hex(16), data)
            self.sessions[session.session_id] = session
            await session.attach(ws, after_seq=None)
            await session.dispatch("READY", self._ready_payload(session))
            if session.intents & GUILDS:
                for world in self._state.worlds:
                    await session.dispatch(
                        "GUILD_CREATE",
                        world.guild_payload(all_members=bool(session.intents & GUILD_MEMBERS)),
                    )
            self.identifies.append(data)
            self._state.signal.notify()
        elif op == RESUME:
            resumed = self.sessions.get(data.get("session_id", ""))
            if resumed is None or data.get("token") != self._state.bot_token:
                await ws.send_str(json.dumps({"op": INVALID_SESSION, "d": False}))
                return None
            session = resumed
            await session.attach(ws, after_seq=data.get("seq") or 0)
            await session.dispatch("RESUMED", {})
            self.resumes.append(data)
            self._state.signal.notify()
        elif op == REQUEST_GUILD_MEMBERS and session is not None:
            await session.dispatch("GUILD_MEMBERS_CHUNK", self._members_chunk(data))
        elif op in (PRESENCE_UPDATE, VOICE_STATE_UPDATE):
            pass  # accepted and ignored, as nothing here observes presence
        else:
            self._state.unhandled.append(f"gateway op {op}: {json.dumps(frame)[:200]}")
        return session

    def _ready_payload(self, session: GatewaySession) -> JSON:
        world = self._state.world
        return {
            "v": 10,
            "user": world.user_payload(world.bot_user_id),
            "guilds": [{"id": str(w.guild_id), "unavailable": True} for w in self._state.worlds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self._gateway_url(),
            "application": {"id": str(world.application_id), "flags": APPLICATION_FLAGS},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
            "guild_join_requests": [],
        }

    def _members_chunk(self, data: Any) -> JSON:
        world = self._state.world
        ids = [int(u) for u in data.get("user_ids") or []]
        query = (data.get("query") or "").lower()
        limit = data.get("limit") or len(world.members)
        if ids:
            matched = [i for i in ids if i in world.members]
        else:
            matched = [i for i, m in world.members.items() if m.name.lower().startswith(query)]
        return {
            "guild_id": str(world.guild_id),
            "members": [world.member_payload(i) for i in matched[:limit]],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [str(i) for i in ids if i not in world.members],
            "nonce": data.get("nonce"),
        }
