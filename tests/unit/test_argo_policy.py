"""The Argo boot option and the FLASK-style policy reader (hv/argo/config.py, policy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyxen.hv.argo.config import ArgoConfig, ArgoOptionError
from pyxen.hv.argo.policy import DUMMY, FlaskPolicy, Perm, PolicyError, label_type

DOMU = "system_u:system_r:domU_t"


@pytest.mark.parametrize(("text", "enabled", "mac"), [
    ("1", True, False), ("argo=1", True, False), ("on,mac-permissive", True, True),
    ("argo=yes,mac-permissive=1", True, True), ("0,mac-permissive=0", False, False),
    ("true,no-mac-permissive", True, False),
])
def test_boot_option(text: str, enabled: bool, mac: bool) -> None:
    assert ArgoConfig.parse(text) == ArgoConfig(enabled, mac)


@pytest.mark.parametrize("text", ["2", "mac-permissive=maybe", "argo=1,foo"])
def test_bad_boot_option(text: str) -> None:
    with pytest.raises(ArgoOptionError, match="argo=<bool>"):
        ArgoConfig.parse(text)


def test_dummy_allows_everything() -> None:
    assert all(DUMMY.allows(p, DOMU, "xen_t") for p in Perm)


def test_xen_default_policy_rules() -> None:
    p = FlaskPolicy.parse("""
        # Xen's default policy for Argo (guest_features.te)
        allow domain_type xen_t:argo { enable register_any_source };
        allow domain_type domain_type:argo { send register_single_source };
        allow domain_type xen_t:version { xen_version };   # another class: ignored
    """)
    assert p.allows(Perm.enable, DOMU, "xen_t")
    assert p.allows(Perm.register_any_source, "dom0_t", "xen_t")
    assert p.allows(Perm.send, DOMU, "system_u:system_r:dom0_t")
    assert not p.allows(Perm.send, DOMU, "xen_t")
    assert not p.allows(Perm.enable, "xen_t", "xen_t")  # xen_t is not a domain_type


def test_types_and_attributes() -> None:
    p = FlaskPolicy.parse("""
        attribute talker;
        type red_t, talker;
        type blue_t;
        allow talker blue_t:argo send;
        allow { blue_t } { red_t blue_t }:argo { register_single_source };
    """)
    assert p.allows(Perm.send, "u:r:red_t", "blue_t")
    assert not p.allows(Perm.send, "u:r:blue_t", "blue_t")
    assert p.allows(Perm.register_single_source, "blue_t", "red_t")
    assert label_type("system_u:system_r:domU_t") == "domU_t"


@pytest.mark.parametrize(("text", "message"), [
    ("allow a b:argo { fly };", "class argo has no permission 'fly'"),
    ("allow a b:argo send", "no ';'"),
    ("type a, undeclared;", "attribute 'undeclared' is not declared"),
    ("neverallow a b:argo send;", "'neverallow' is not a statement"),
    ("\n\nallow a:argo send;", ":3: expected 'allow"),
    ("allow a-b c:argo send;", "not a valid name"),
])
def test_policy_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        FlaskPolicy.parse(text, "p.te")


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        FlaskPolicy.load(tmp_path / "missing.te")
    f = tmp_path / "ok.te"
    f.write_text("allow domain_type xen_t:argo enable;\n")
    assert FlaskPolicy.load(f).allows(Perm.enable, DOMU, "xen_t")


def test_xl_cfg_seclabel(tmp_path: Path) -> None:
    from pyxen.toolstack.domain_config import DomainConfig
    from pyxen.toolstack.xlcfg import XlCfgError, parse_xl_cfg

    kernel = tmp_path / "k.elf"
    kernel.write_bytes(b"")
    cfg = tmp_path / "d.cfg"

    def load(extra: str) -> DomainConfig:
        text = f'name = "d"\nkernel = "{kernel}"\n{extra}'
        return DomainConfig.from_xl(parse_xl_cfg(text, str(cfg)), cfg)

    assert load("").seclabel == "system_u:system_r:domU_t"
    assert load('seclabel = "system_u:system_r:red_t"\n').seclabel == "system_u:system_r:red_t"
    with pytest.raises(XlCfgError, match=r"seclabel.*user:role:type"):
        load('seclabel = "a b"\n')


def test_a_policy_cannot_make_millions_of_rules() -> None:
    names = " ".join(f"t{i}" for i in range(2000))
    with pytest.raises(PolicyError, match="more than"):
        FlaskPolicy.parse(f"allow {{ {names} }} {{ {names} }}:argo send;")
    many = "".join(f"allow {{ {names} }} x{i}:argo send;\n" for i in range(40))
    with pytest.raises(PolicyError, match=":33: more than"):
        FlaskPolicy.parse(many)
