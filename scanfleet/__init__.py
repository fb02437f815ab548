"""scanfleet: controller-side logic for a fleet of patched-nmap scanner hosts.

Pure functions, no Ansible imports: Ansible plugins in ``plugins/`` are thin adapters over this package.
"""

__version__ = "0.1.0"


class ScanfleetError(Exception):
    """An error with a message meant for the user: it names the input and the fix."""
