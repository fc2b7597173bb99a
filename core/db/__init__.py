"""Persistence: models, engines, sessions and migrations."""

from core.db.engine import check_connection, make_engine, make_session_factory, session_scope
from core.db.migrate import upgrade
from core.db.models import Base

__all__ = [
    "Base",
    "check_connection",
    "make_engine",
    "make_session_factory",
    "session_scope",
    "upgrade",
]
