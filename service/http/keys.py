"""Application keys: the shared objects every handler reaches through ``request.app``."""

from __future__ import annotations

from aiohttp import web

from billing.l402 import L402Authority
from billing.store import Store

from ..balance import BalanceWatcher
from ..books import BooksWatcher
from ..config import Settings
from ..tasks.engine import Engine
from .limits import Limiter

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
L402: web.AppKey[L402Authority] = web.AppKey("l402", L402Authority)
BALANCE: web.AppKey[BalanceWatcher] = web.AppKey("balance", BalanceWatcher)
BOOKS: web.AppKey[BooksWatcher] = web.AppKey("books", BooksWatcher)
LIMITER: web.AppKey[Limiter] = web.AppKey("limiter", Limiter)
