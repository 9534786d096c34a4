"""Domain names: the one rule set that create, rename and the xl.cfg parser apply.

xl's rules (libxl): a domain needs a name (xl_parse.c refuses a config
without one) and names are unique among all domains -- libxl__domain_rename,
which both domain creation (libxl__domain_make) and ``xl rename`` go
through, refuses a name another domain has, and domain 0 is always there as
``Domain-0``, so no guest can take that name.  Uniqueness among guests is the
``DomainManager``'s (it knows the live domains); everything that can be said
from the name alone is here.

pyxen's own additions, because a name also names files and table rows:

* no ``/``: consoled writes ``console/guest-NAME.log`` (xenconsoled's name);
* printable characters only (one line in ``list``, logs and errors);
* at most ``MAX_NAME_LENGTH`` characters.

An all-digit name is allowed, as in xl, although commands read an all-digit
domain argument as a domain id (libxl_domain_qualifier_to_domid): such a
domain is addressed by its id.

Each problem is one line saying what to change.
"""

from __future__ import annotations

DOM0_NAME = "Domain-0"
MAX_NAME_LENGTH = 64


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a guest domain (one line), or None if it can."""
    if not name:
        return "the domain name is empty: give the domain a name"
    shown = name if name.isprintable() else repr(name)[1:-1]
    if len(name) > MAX_NAME_LENGTH:
        return (f"the domain name '{shown[:20]}...' is {len(name)} characters long: "
                f"use at most {MAX_NAME_LENGTH}")
    if name == DOM0_NAME:
        return f"'{DOM0_NAME}' is domain 0's name: choose another name"
    if "/" in name:
        return (f"the domain name '{shown}' contains '/': it names the console log file "
                "(guest-NAME.log); choose a name without '/'")
    if not name.isprintable():
        return (f"the domain name '{shown}' contains unprintable characters: use printable "
                "ones only")
    return None
