from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from annotate.demo import DEMO_USERS, seed_demo


class Command(BaseCommand):
    help = "Create the demo project, its users, prompts and pairs (safe to run again)."

    def handle(self, *args: Any, **options: Any) -> None:
        project, report = seed_demo()
        if report is None:
            self.stdout.write(f"Demo project '{project.name}' already present; nothing changed.")
        else:
            self.stdout.write(
                f"Seeded '{project.name}': {report.prompts_added} prompts, "
                f"{report.comparisons_added} pairs."
            )
        self.stdout.write("Demo logins:")
        for user in DEMO_USERS:
            self.stdout.write(f"  {user.role:<10} {user.username} / {user.password}")
