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

from core import audit
from core.db.models import Agent, AgentIdentity
from core.domain import Role
from core.errors import InvalidInput, NotFound

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """A salted scrypt hash of a password, in one self-describing string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches the stored hash (constant time)."""
    if not stored or not stored.startswith("scrypt$"):
        return False
    try:
        _, salt_hex, digest_hex = stored.split("$", 2)
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False  # a damaged record refuses the sign-in; it never crashes it
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def find_by_email(session: Session, email: str) -> Agent | None:
    """The agent with this email, ignoring case."""
    return session.scalar(select(Agent).where(func.lower(Agent.email) == email.strip().lower()))


def authenticate(session: Session, email: str, password: str) -> Agent | None:
    """The active agent with these credentials, or None (same answer for every failure)."""
    agent = find_by_email(session, email)
    if agent is None or not agent.active:
        # Hash anyway so a wrong email takes as long as a wrong password.
        check_password(hash_password("x"), password)
        return None
    return agent if check_password(agent.password_hash, password) else None


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
    session: Session, *, helpdesk: str, account: str, external_user_id: str
) -> Agent:
    """Our active agent behind a helpdesk user; NotFound when nobody linked them."""
    agent = session.scalar(
        select(Agent)
        .join(AgentIdentity)
        .where(
            AgentIdentity.helpdesk == helpdesk,
            AgentIdentity.account == account,
            AgentIdentity.external_user_id == external_user_id,
            Agent.active.is_(True),
        )
    )
    if agent is None:
        raise NotFound(
            f"{helpdesk} user {external_user_id} in {account} is not linked to a Billing Desk agent"
        )
    return agent
