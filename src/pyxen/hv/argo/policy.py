"""Who may use Argo: Xen's XSM hooks for Argo, the dummy policy and a FLASK-style one.

Four permissions of FLASK class ``argo`` (Xen 4.12):

=========================  ==================  ===========================
permission                 asked of            when
=========================  ==================  ===========================
enable                     domain -> xen_t     domain creation, every call
register_single_source     domain -> partner   registering a unicast ring
register_any_source        domain -> xen_t     registering a wildcard ring
send                       sender -> receiver  sendv, and notify's queries
=========================  ==================  ===========================

``DUMMY`` (Xen without FLASK) allows everything.  ``FlaskPolicy`` reads a
policy file in a small subset of the FLASK policy language, enough for the
Argo rules of Xen's own policy::

    # comments run to the end of the line
    type dom0_t, domain_type;           # a type and its attributes
    attribute trusted;                  # declares an attribute
    allow domain_type xen_t:argo { enable register_any_source };
    allow domain_type domain_type:argo { send register_single_source };

A name in an ``allow`` matches a type of that name or any type carrying that
attribute; ``domain_type`` is carried by every type except ``xen_t``, so it
need not be declared.  Rules for other classes are read and ignored (a full
Xen policy can be loaded as it is); anything else malformed is a one-line
``FILE:LINE: problem``.  A domain's type is the last field of its security
label (xl.cfg ``seclabel``, ``system_u:system_r:domU_t`` by default;
domain 0's is ``dom0_t``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

XEN_TYPE = "xen_t"
DOMAIN_TYPE = "domain_type"
DEFAULT_DOMU_LABEL = "system_u:system_r:domU_t"
DOM0_LABEL = "system_u:system_r:dom0_t"
# user:role:type, as xl.cfg's seclabel is written (the type may stand alone).
SECLABEL_RE = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*:){0,2}[A-Za-z_][A-Za-z0-9_]*")


class Perm(enum.Enum):
    enable = "enable"
    register_single_source = "register_single_source"
    register_any_source = "register_any_source"
    send = "send"


class PolicyError(ValueError):
    """A policy file that cannot be loaded (the message names the file and line)."""


def label_type(label: str) -> str:
    """The type of a security label (``user:role:type`` or a bare type)."""
    return label.rsplit(":", 1)[-1]


class Policy:
    """Xen's dummy XSM module: every Argo permission is granted."""

    name = "dummy"

    def allows(self, perm: Perm, source: str, target: str) -> bool:
        return True


DUMMY = Policy()


@dataclass(eq=False)
class FlaskPolicy(Policy):
    """Allow rules over types; anything not allowed is denied."""

    rules: set[tuple[str, str, Perm]] = field(default_factory=set)
    attributes: dict[str, set[str]] = field(default_factory=dict)  # type -> attributes
    source: str = "<string>"
    name = "flask"

    def allows(self, perm: Perm, source: str, target: str) -> bool:
        s, t = label_type(source), label_type(target)
        return any((a, b, perm) in self.rules
                   for a in self._names(s) for b in self._names(t))

    def _names(self, type_: str) -> Iterable[str]:
        yield type_
        yield from self.attributes.get(type_, ())
        if type_ != XEN_TYPE:
            yield DOMAIN_TYPE

    @classmethod
    def load(cls, path: Path) -> FlaskPolicy:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyError(f"{path}: cannot read the policy: {e}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> FlaskPolicy:
        policy = cls(source=source)
        declared_attrs = {DOMAIN_TYPE}
        for line_no, stmt in _statements(text, source):
            words = stmt.split()
            where = f"{source}:{line_no}"
            if words[0] == "attribute":
                if len(words) != 2 or not _NAME.fullmatch(words[1]):
                    raise PolicyError(f"{where}: expected 'attribute NAME;'")
                declared_attrs.add(words[1])
            elif words[0] == "type":
                names = [w.strip() for w in stmt[len("type"):].split(",")]
                if not names or not all(_NAME.fullmatch(n) for n in names):
                    raise PolicyError(f"{where}: expected 'type NAME[, ATTRIBUTE...];'")
                for attr in names[1:]:
                    if attr not in declared_attrs:
                        raise PolicyError(f"{where}: attribute '{attr}' is not declared "
                                          "(add 'attribute {attr};' first)")
                policy.attributes.setdefault(names[0], set()).update(names[1:])
            elif words[0] == "allow":
                policy.rules |= _allow(stmt, where)
                if len(policy.rules) > MAX_RULES:
                    raise PolicyError(f"{where}: more than {MAX_RULES} Argo rules")
            else:
                raise PolicyError(f"{where}: '{words[0]}' is not a statement this policy "
                                  "reader knows (type, attribute, allow)")
        return policy


# Rules a policy may make (a few dozen in practice).  An allow statement makes
# sources x targets x permissions of them: without a bound, two sets of 10,000
# names in a loadpolicy request would make 10^8 and take the hypervisor's memory.
MAX_RULES = 1 << 16
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ALLOW = re.compile(r"allow\s+(?P<src>\{[^}]*\}|\S+)\s+(?P<tgt>\{[^}]*\}|[^\s:]+)\s*:\s*"
                    r"(?P<cls>\w+)\s+(?P<perms>\{[^}]*\}|\w+)\s*$", re.DOTALL)


def _statements(text: str, source: str) -> Iterable[tuple[int, str]]:
    """(line of its start, text) of each ';'-terminated statement, comments removed."""
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    parts = body.split(";")
    if parts[-1].strip():
        raise PolicyError(f"{source}:{body.count(chr(10)) + 1}: the last statement has no ';'")
    line_no = 1
    for part in parts[:-1]:
        lead = part[: len(part) - len(part.lstrip())]
        if part.strip():
            yield line_no + lead.count("\n"), " ".join(part.split())
        line_no += part.count("\n")


def _set(text: str) -> list[str]:
    names = text.strip("{} ").split()
    bad = [n for n in names if not _NAME.fullmatch(n)]
    if not names or bad:
        raise ValueError(bad[0] if bad else "an empty set")
    return names


def _allow(stmt: str, where: str) -> set[tuple[str, str, Perm]]:
    m = _ALLOW.fullmatch(stmt)
    if m is None:
        raise PolicyError(f"{where}: expected 'allow SOURCE TARGET:CLASS PERMISSIONS;'")
    try:
        sources, targets, perms = _set(m["src"]), _set(m["tgt"]), _set(m["perms"])
    except ValueError as e:
        raise PolicyError(f"{where}: '{e}' is not a valid name") from None
    if m["cls"] != "argo":
        return set()  # another class: not Argo's business
    if len(sources) * len(targets) * len(perms) > MAX_RULES:  # before building them all
        raise PolicyError(f"{where}: more than {MAX_RULES} Argo rules")
    out = set()
    for p in perms:
        try:
            perm = Perm(p)
        except ValueError:
            raise PolicyError(f"{where}: class argo has no permission '{p}' (it has "
                              f"{', '.join(x.value for x in Perm)})") from None
        out |= {(s, t, perm) for s in sources for t in targets}
    return out
