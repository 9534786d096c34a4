"""xl's on_poweroff/on_reboot/on_crash/on_watchdog: which setting a shutdown reason reads.

Kept free of imports: ``pyxen create`` (the client) needs it too.
"""

from __future__ import annotations

ACTIONS = ("destroy", "restart", "rename-restart", "preserve")

# SHUTDOWN_poweroff 0, reboot 1, crash 3, watchdog 4; any other reason (suspend,
# soft_reset, unknown) destroys the domain.
ACTION_SETTINGS = {0: "on_poweroff", 1: "on_reboot", 3: "on_crash", 4: "on_watchdog"}


def action_setting(reason: int) -> str | None:
    """The on_* setting that decides what shutdown ``reason`` does; None: destroy."""
    return ACTION_SETTINGS.get(reason)
