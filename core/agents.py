"""Agent records: who works tickets, with which role, and who they are in each helpdesk.

Roles live here and only here. A helpdesk tells us which of its users is looking (after we
verify its signature); this module says who that person is and which role they have, and
core.policy.approvals what each role may approve.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import agent_sessions, audit
from core.db.models import Agent, AgentIdentity
from core.domain import Role
from core.errors import InvalidInput, NotFound

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
# The hash of a random password nobody knows, checked when there is no real hash to check.
# A literal, so no request pays for computing it (that would be a second scrypt).
_DUMMY_HASH = (
    "scrypt$632b060e0592e16a1598afffb663e494$cabec13251c21fdb0a203d83ca41ee96fed4cdbe2dd2bfab0"
    "49182995bc872b3cecb5c7c7256d2e987fb9564a605377506f3f2deafdfa627b7fa73752509f771"
)


def hash_password(password: str) -> str:
    """A salted scrypt hash of a password, in one self-describing string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def _parse_hash(stored: str | None) -> tuple[bytes, str] | None:
    """The salt and hex digest of a stored hash, or None for no or a damaged record."""
    if not stored or not stored.startswith("scrypt$"):
        return None
    try:
        _, salt_hex, digest_hex = stored.split("$", 2)
        return bytes.fromhex(salt_hex), digest_hex
    except ValueError:
        return None  # a damaged record refuses the sign-in; it never crashes it


def check_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches the stored hash (constant time)."""
    parsed = _parse_hash(stored)
    if parsed is None:
        return False
    salt, digest_hex = parsed
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def find_by_email(session: Session, email: str) -> Agent | None:
    """The agent with this email, ignoring case."""
    return session.scalar(select(Agent).where(func.lower(Agent.email) == email.strip().lower()))


def authenticate(session: Session, email: str, password: str) -> Agent | None:
    """The active agent with these credentials, or None (same answer, same work, every failure)."""
    agent = find_by_email(session, email)
    usable = agent is not None and agent.active and _parse_hash(agent.password_hash) is not None
    # Exactly one scrypt whoever asks: an unknown email, a deactivated agent or one without a
    # password costs what a wrong password costs, so the time taken tells nobody which it was.
    stored = agent.password_hash if agent is not None and usable else _DUMMY_HASH
    matches = check_password(stored, password)
    return agent if usable and matches else None


def save_agent(
    session: Session,
    *,
    email: str,
    name: str,
    role: Role,
    password: str | None = None,
    actor: str = "admin",
) -> Agent:
    """Create an agent or update their name, role and password; audited."""
    email = email.strip()
    if "@" not in email:
        raise InvalidInput(f"{email!r} is not an email address")
    agent = find_by_email(session, email)
    if agent is None:
        agent = Agent(email=email, name=name, role=role, active=True)
        session.add(agent)
    agent.name, agent.role = name or agent.name, role
    if password is not None:
        if len(password) < 8:
            raise InvalidInput("a password needs at least 8 characters")
        agent.password_hash = hash_password(password)
    session.flush()
    audit.record(session, actor=actor, event="agent.saved", agent=agent.email, role=str(role))
    return agent


def deactivate(session: Session, agent: Agent, *, actor: str = "admin") -> int:
    """Take away an agent's access at once: inactive, and every signed-in session ended."""
    agent.active = False
    ended = agent_sessions.revoke_all(session, agent)
    audit.record(
        session, actor=actor, event="agent.deactivated", agent=agent.email, sessions_ended=ended
    )
    return ended


def link_identity(
    session: Session, agent: Agent, *, helpdesk: str, account: str, external_user_id: str
) -> AgentIdentity:
    """Record that a helpdesk user is this agent (once; relinking moves the identity)."""
    identity = session.scalar(
        select(AgentIdentity).where(
            AgentIdentity.helpdesk == helpdesk,
            AgentIdentity.account == account,
            AgentIdentity.external_user_id == external_user_id,
        )
    )
    if identity is None:
        identity = AgentIdentity(
            helpdesk=helpdesk, account=account, external_user_id=external_user_id
        )
        session.add(identity)
    identity.agent_id = agent.id
    session.flush()
    audit.record(
        session,
        actor="admin",
        event="agent.linked",
        agent=agent.email,
        helpdesk=helpdesk,
        account=account,
        external_user_id=external_user_id,
    )
    return identity


def agent_for_identity(
    session: Session, *, helpdesk: str, account: str | None, external_user_id: str
) -> Agent:
    """Our active agent behind a helpdesk user; NotFound when nobody linked them. ``account``
    None takes a link made under any account, for helpdesks whose user IDs are unique across
    their accounts (Help Scout): unless two links name different agents."""
    conditions = [
        AgentIdentity.helpdesk == helpdesk,
        AgentIdentity.external_user_id == external_user_id,
        Agent.active.is_(True),
    ]
    if account is not None:
        conditions.append(AgentIdentity.account == account)
    found = set(session.scalars(select(Agent).join(AgentIdentity).where(*conditions)).all())
    agent = found.pop() if len(found) == 1 else None
    if agent is None:
        raise NotFound(
            f"{helpdesk} user {external_user_id} in {account} is not linked to a Billing Desk agent"
        )
    return agent
