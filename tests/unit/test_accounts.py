"""The accounts file: parsed into accounts, or refused naming the file, account and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.catapush.accounts import SETTINGS_ACCOUNT, accounts_from, load_accounts
from dispatcher.errors import ConfigurationError
from dispatcher.settings import Settings

TWO_ACCOUNTS = """
[shop]
client_id = "shop-id"
client_secret = "shop-Secret-1"
mobile_app_ids = [101]
rate_limit = 5

[courier]
access_token = "courier-Token-2"
mobile_app_ids = [202, 203]
rate_burst = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return path


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_each_account_has_its_apps_and_limits_with_defaults_from_the_settings(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, TWO_ACCOUNTS)
    found = accounts_from(settings(tmp_path, accounts_file=path, catapush_mobile_app_id=202))
    shop, courier = found.accounts
    assert (shop.name, shop.rate_limit, shop.rate_burst) == ("shop", 5, 20)
    assert (courier.rate_limit, courier.rate_burst) == (20, 3)
    assert found.for_app(101) is shop
    assert found.for_app(None) is courier
    assert found.for_app(999) is None
    assert found.named(None) is courier
    assert found.named("shop") is shop
    assert "Secret" not in repr(shop)
    assert "Token" not in repr(courier)
    assert shop.rate_scope == "shop"


def test_without_a_file_the_settings_account_sends_for_any_app(tmp_path: Path) -> None:
    found = accounts_from(settings(tmp_path, catapush_client_id="id", catapush_client_secret="s"))
    (account,) = found.accounts
    assert account.name == SETTINGS_ACCOUNT
    assert found.for_app(12345) is account
    assert account.rate_scope is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[shop]\nmobile_app_ids = [1]\n", "[shop] client_id: required"),
        ('[shop]\nclient_id = "x"\nmobile_app_ids = [1]\n', "[shop] client_secret: required"),
        (
            '[shop]\naccess_token = "t"\nclient_id = "x"\nmobile_app_ids = [1]\n',
            "[shop] access_token: give either",
        ),
        ('[shop]\naccess_token = "t"\n', "[shop] mobile_app_ids: Field required"),
        ('[shop]\naccess_token = "t"\nmobile_app_ids = ["a"]\n', "[shop] mobile_app_ids.0:"),
        (
            '[shop]\naccess_token = "t"\nmobile_app_ids = [1]\nrate_limit = 0\n',
            "[shop] rate_limit: Input should be greater than 0",
        ),
        ('[shop]\naccess_token = "t"\nmobile_app_ids = [1]\ncolour = 1\n', "[shop] colour:"),
        (
            '[a]\naccess_token = "t"\nmobile_app_ids = [1]\n'
            '[b]\naccess_token = "u"\nmobile_app_ids = [1]\n',
            "[b] mobile_app_ids: app 1 is already [a]'s",
        ),
        ('["a:b"]\naccess_token = "t"\nmobile_app_ids = [1]\n', "[a:b] the account name"),
        ('shop = "x"\n', "shop: must be a table"),
        ("[shop\n", "is not valid TOML"),
        ("", "no account"),
    ],
)
def test_a_bad_file_is_one_error_naming_file_account_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as caught:
        load_accounts(path, default_rate=20, default_burst=20)
    message = str(caught.value)
    assert message.startswith(f"DISPATCHER_ACCOUNTS_FILE: {path}: ")
    assert expected in message
    assert '"t"' not in message
    assert "'t'" not in message


def test_the_default_app_must_have_an_account(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_ACCOUNTS)
    with pytest.raises(ConfigurationError, match=r"CATAPUSH_MOBILE_APP_ID \(7\)"):
        accounts_from(settings(tmp_path, accounts_file=path, catapush_mobile_app_id=7))
    with pytest.raises(ConfigurationError, match="no account 'nope'; the accounts are shop"):
        accounts_from(settings(tmp_path, accounts_file=path)).named("nope")
    with pytest.raises(ConfigurationError, match="--account: required"):
        accounts_from(settings(tmp_path, accounts_file=path)).named(None)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_accounts(tmp_path / "nope.toml", default_rate=1, default_burst=1)
