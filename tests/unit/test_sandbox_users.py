"""The sandbox's users and accounts, without I/O."""

from __future__ import annotations

from dispatcher.sandbox.state import SandboxState
from dispatcher.sandbox.users import UserDirectory, user_problems


def test_pages_are_one_based_in_creation_order_and_empty_past_the_end() -> None:
    users = UserDirectory(wall_clock=lambda: 0.0)
    assert users.seed(7, [f"u{n}" for n in range(5)]) == 5
    assert users.page(7, 1, 2) == (5, users.page(7, 0, 2)[1])
    assert [u.identifier for u in users.page(7, 3, 2)[1]] == ["u4"]
    assert users.page(7, 4, 2) == (5, [])
    assert users.page(8, 1, 2) == (0, [])


def test_a_second_create_of_one_identifier_creates_nothing() -> None:
    users = UserDirectory()
    assert users.create(1, "alice", "pw1") is not None
    assert users.create(1, "alice", "pw2") is None
    assert users.create(2, "alice", "pw2") is not None
    assert users.created == 2
    assert "password" not in users.get(1, "alice").public()  # type: ignore[union-attr]


def test_user_problems_name_each_field() -> None:
    assert user_problems({"identifier": "a b", "password": "ok_pw"}) == [
        "identifier: does not match ^[!-~]{1,100}$"
    ]
    assert user_problems({"identifier": "x"}) == ["password: Field required"]
    assert user_problems({"password": "no"}, partial=True)[0].startswith("password: does not")
    assert user_problems([]) == ["body: must be a JSON object, not list"]


def test_revoke_ends_only_the_callers_account_and_apps_belong_to_accounts() -> None:
    state = SandboxState()
    state.add_client("second", "second-secret", [202])
    assert state.credentials_valid("second", "second-secret")
    assert not state.credentials_valid("second", "wrong")
    primary, second = state.issue_token(), state.issue_token("second")
    assert state.may_send_for(second, 202)
    assert not state.may_send_for(primary, 202)
    assert state.may_send_for(primary, 101)
    assert state.revoke_tokens(state.client_of(second)) == 1
    assert state.check_token(second) == "unknown"
    assert state.check_token(primary) == "ok"
