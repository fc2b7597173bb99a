# One image for every Billing Desk process; the command chooses which:
#   docker run IMAGE                               the web app (gunicorn) on port 8000
#   docker run IMAGE worker --queue automation --queue events --queue mail
#   docker run IMAGE worker --queue actions --processes 1
#   docker run IMAGE poll-mail
#   docker run IMAGE db upgrade                    the release step, before new code serves
# Configuration is the environment (DATABASE_URL, REDIS_URL, STRIPE_API_KEY, ...: README.md).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/billing-desk
WORKDIR /src
# Only what the package is built from: pyproject.toml lists core, mail, jobs and helpdesk_app,
# and installs templates/ under /opt/billing-desk/share/billing-desk/templates.
COPY pyproject.toml README.md ./
COPY templates templates
COPY core core
COPY mail mail
COPY jobs jobs
COPY helpdesk_app helpdesk_app
RUN /opt/billing-desk/bin/pip install .

FROM python:3.11-slim
# A user of its own, no login, no password; it owns nothing it runs.
RUN useradd --system --uid 10001 --user-group --home-dir /home/billing-desk --create-home \
        --shell /usr/sbin/nologin billing-desk
COPY --from=build /opt/billing-desk /opt/billing-desk
ENV PATH=/opt/billing-desk/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER billing-desk
WORKDIR /home/billing-desk
EXPOSE 8000
ENTRYPOINT ["billing-desk"]
CMD ["web", "--host", "0.0.0.0", "--port", "8000"]
