"""`python -m helpdesk_app` runs the billing-desk command."""

from helpdesk_app.cli import main

main()
