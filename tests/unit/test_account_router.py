"""The account router: each app goes with its account's token source, limiter and client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from dispatcher.catapush.accounts import accounts_from
from dispatcher.catapush.router import AccountRouter
from dispatcher.errors import IntentRefused
from dispatcher.settings import Settings

ACCOUNTS = """
[shop]
client_id = "shop-id"
client_secret = "shop-secret"
mobile_app_ids = [101]
rate_limit = 5

[courier]
client_id = "courier-id"
client_secret = "courier-secret"
mobile_app_ids = [202]
"""


def test_each_app_routes_to_its_own_account(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(ACCOUNTS)
    settings = Settings(_env_file=None, accounts_file=path, catapush_mobile_app_id=202)  # type: ignore[call-arg]

    async def run() -> None:
        # No command is sent: building clients, caches and limiters makes no connection.
        redis = aioredis.Redis(host="127.0.0.1", port=1)
        router = AccountRouter(settings, accounts_from(settings), redis)
        try:
            shop_client, shop_limiter = router.route(101)
            courier_client, courier_limiter = router.route(202)
            assert shop_client is not courier_client
            assert shop_limiter is not courier_limiter
            shop, courier = router.for_app(101), router.for_app(202)
            assert shop is not None
            assert courier is not None
            assert router.default is courier
            assert shop.limiter._rate_key.endswith(":ratelimit:shop")
            assert courier.limiter._rate_key.endswith(":ratelimit:courier")
            assert shop.tokens._token_key != courier.tokens._token_key  # type: ignore[attr-defined]
            with pytest.raises(IntentRefused, match=r"mobileAppId: no account .* app 999"):
                router.route(999)
        finally:
            await router.aclose()
            await redis.aclose()

    asyncio.run(run())
