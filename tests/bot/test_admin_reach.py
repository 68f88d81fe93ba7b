"""The admin rule: the bot's owners everywhere, a server's managers in their own server."""

from __future__ import annotations

import pytest

from bot.admin_reach import (
    SERVER_ACTIONS,
    AdminReach,
    Admins,
    AdminScope,
    Asker,
    admin_reach,
    needed_reach,
)

OWNER, CONFIGURED, STRANGER, MEMBER = 1, 2, 3, 4
HOME, OTHER = 100, 200
ADMIN_ROLE = 50
ADMINS = Admins.of([OWNER], [CONFIGURED], [ADMIN_ROLE], [])


def test_the_owner_and_configured_ids_and_roles_reach_everywhere_even_by_dm() -> None:
    for asker in (
        Asker(OWNER, HOME),
        Asker(CONFIGURED, OTHER),
        Asker(MEMBER, OTHER, role_ids=(ADMIN_ROLE,)),
        Asker(OWNER, None),
    ):
        assert admin_reach(ADMINS, asker) is AdminReach.GLOBAL, asker


def test_manage_server_reaches_only_that_server_and_nothing_in_a_dm() -> None:
    assert admin_reach(ADMINS, Asker(STRANGER, OTHER, manages_guild=True)) is AdminReach.SERVER
    assert admin_reach(ADMINS, Asker(STRANGER, None, manages_guild=True)) is AdminReach.NONE
    assert admin_reach(ADMINS, Asker(MEMBER, HOME, role_ids=(7,))) is AdminReach.NONE


def test_with_no_owner_known_and_nothing_configured_nobody_reaches_everywhere() -> None:
    """Discord could not be asked for the owner: Manage Server never stands in for it."""
    nobody = Admins.of([], [], [], [])
    assert admin_reach(nobody, Asker(STRANGER, HOME, manages_guild=True)) is AdminReach.SERVER
    assert admin_reach(nobody, Asker(MEMBER, HOME)) is AdminReach.NONE


def test_outside_the_allowed_servers_nobody_administers_not_even_the_owner() -> None:
    admins = Admins.of([OWNER], [], [], [HOME])
    assert admin_reach(admins, Asker(OWNER, OTHER)) is AdminReach.NONE
    assert admin_reach(admins, Asker(OWNER, None)) is AdminReach.NONE
    assert admin_reach(admins, Asker(STRANGER, OTHER, manages_guild=True)) is AdminReach.NONE
    assert admin_reach(admins, Asker(OWNER, HOME)) is AdminReach.GLOBAL
    assert admin_reach(admins, Asker(STRANGER, HOME, manages_guild=True)) is AdminReach.SERVER


@pytest.mark.parametrize(
    "action", ["quota.set", "quota.reset", "quota.show", "ban", "unban", "status", "models"]
)
def test_actions_on_every_server_need_a_global_admin(action: str) -> None:
    assert needed_reach(action) is AdminReach.GLOBAL
    assert not AdminScope(AdminReach.SERVER, OTHER).allows(action)
    assert AdminScope(AdminReach.GLOBAL, OTHER).allows(action)


def test_an_action_nobody_classified_needs_a_global_admin() -> None:
    assert needed_reach("something.added.later") is AdminReach.GLOBAL


def test_a_server_manager_keeps_their_own_blocklist_but_not_the_global_one() -> None:
    server = AdminScope(AdminReach.SERVER, OTHER)
    assert server.allows("blocklist.add") and server.allows("blocklist.remove")
    assert not server.allows("blocklist.add", everywhere=True)
    assert not server.allows("blocklist.remove", everywhere=True)
    assert AdminScope(AdminReach.GLOBAL, OTHER).allows("blocklist.remove", everywhere=True)


def test_nobody_without_reach_is_allowed_anything() -> None:
    none = AdminScope(AdminReach.NONE, HOME)
    assert not any(none.allows(action) for action in SERVER_ACTIONS)
    assert not none.covers_job(HOME)


def test_a_scope_without_reach_reads_no_server_rather_than_every_one() -> None:
    for scope in (AdminScope(AdminReach.NONE, HOME), AdminScope(AdminReach.SERVER, None)):
        with pytest.raises(PermissionError):
            _ = scope.only_guild


def test_a_server_manager_sees_and_acts_on_their_servers_rows_only() -> None:
    server = AdminScope(AdminReach.SERVER, OTHER)
    assert server.only_guild == OTHER
    assert server.covers_job(OTHER)
    assert not server.covers_job(HOME)
    assert not server.covers_job(None)  # made by DM, or with a key made in a DM
    everywhere = AdminScope(AdminReach.GLOBAL, OTHER)
    assert everywhere.only_guild is None
    assert everywhere.covers_job(HOME) and everywhere.covers_job(None)
