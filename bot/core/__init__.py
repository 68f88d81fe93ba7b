"""The application core between the two doors (Discord, HTTP) and the store.

- door: every new job passes one sequence of checks (bot.core.door.Door.submit)
  and comes back Accepted or as a typed Refusal (bot.core.refusals).
- actions: the registry of what can be done to a job (bot.core.actions), and
  doing it (bot.core.acting).
- queries: a member's queue, history and balance (bot.core.queries).
- editor: Vary (Region)'s signed editor links and submissions (bot.core.editor).
- views, services, deliveries: the records a door reads, the stored services it
  calls, and the record of a delivered answer.

The core imports no door; the doors import the core, never the store (checked by
import-linter in scripts/check).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..jobs.service import JobService
from ..moderation.service import Moderation
from ..store.commands import CommandStore
from ..store.editor_links import LinkStore
from ..store.quotas import QuotaStore
from ..store.users import UserStore
from .acting import Acting
from .door import Door
from .drafts import Catalog
from .editor import RegionEditor, ResultReplies
from .queries import Queries


@dataclass(frozen=True)
class Core:
    door: Door
    acting: Acting
    queries: Queries
    catalog: Catalog
    # Vary (Region)'s browser editor: its links and what its submissions queue.
    editor: RegionEditor

    @classmethod
    def build(
        cls,
        *,
        config: Config,
        jobs: JobService,
        users: UserStore,
        moderation: Moderation,
        commands: CommandStore,
        quotas: QuotaStore | None,
        links: LinkStore,
        replies: ResultReplies | None = None,
    ) -> Core:
        """The core; `replies` (the bot's Discord, where it runs) answers the browser
        editor's Vary (Region) and so serves the editor (bot.core.editor)."""
        door = Door(jobs=jobs, users=users, moderation=moderation, commands=commands)
        acting = Acting(jobs=jobs, config=config)
        catalog = Catalog(
            models=jobs.models,
            default_model=jobs.default_model,
            styles=config.styles,
            max_permutations=config.generation.max_permutations,
            data_dir=config.storage.data_dir,
            loras=config.loras,
        )
        editor = RegionEditor(
            http=config.http,
            data_dir=config.storage.data_dir,
            links=links,
            door=door,
            acting=acting,
            replies=replies,
        )
        return cls(
            door,
            acting,
            Queries(jobs=jobs, quotas=quotas, engines=max(1, len(config.engine.devices))),
            catalog,
            editor,
        )
