"""xl vif specifications (toolstack/vif_spec.py): xl-network-configuration(5),
libxlu_vif.c's rate grammar and libxl's MAC generation."""

from __future__ import annotations

import random
import re

import pytest

from pyxen.toolstack.vif_spec import (
    EXTRA_KEYS,
    Rate,
    VifSpec,
    VifSpecError,
    check_ifname,
    parse_mac,
    parse_rate,
    parse_vif_spec,
    random_mac,
    vif_name,
)

# --- the man page's examples ------------------------------------------------


def test_empty_string_is_all_defaults() -> None:
    assert parse_vif_spec("") == VifSpec()
    assert VifSpec().type == "vif"


def test_man_page_first_example() -> None:
    spec = parse_vif_spec("mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0")
    assert spec == VifSpec(mac="00:16:3e:74:3d:76", model="rtl8139", bridge="xenbr0")


def test_man_page_mac_only() -> None:
    assert parse_vif_spec("mac=00:16:3E:74:34:32") == VifSpec(mac="00:16:3e:74:34:32")


def test_man_page_list_entries() -> None:
    spec = parse_vif_spec("mac=00:16:3e:5f:48:e4,bridge=xenbr1")
    assert (spec.mac, spec.bridge) == ("00:16:3e:5f:48:e4", "xenbr1")


@pytest.mark.parametrize(("text", "rate"), [
    ("10Mb/s", Rate(62_500, 50_000)),          # 1 250 000 bytes/s over 50 ms
    ("250KB/s", Rate(12_500, 50_000)),
    ("1MB/s@20ms", Rate(20_000, 20_000)),      # the man page: 20,000 bytes every 20,000 us
])
def test_man_page_rates(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate
    assert parse_vif_spec(f"rate={text}").rate == rate


def test_every_key() -> None:
    spec = parse_vif_spec(
        "mac=00:16:3e:00:00:01, bridge=br0, ip=10.0.0.2 fd00::2/64, script=vif-route, "
        "type=ioemu, vifname=guest0, model=e1000, backend=driverdom, gatewaydev=eth0, "
        "rate=1Gb/s@1ms, devid=3, mtu=9000, accel=x, untrusted")
    assert spec == VifSpec(
        mac="00:16:3e:00:00:01", bridge="br0", ip="10.0.0.2 fd00::2/64", script="vif-route",
        type="ioemu", vifname="guest0", model="e1000", backend="driverdom",
        gatewaydev="eth0", rate=Rate(125_000, 1000), devid=3, mtu=9000, accel="x",
        trusted=False)


# --- syntax -------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "mac=00:16:3e:00:00:01,bridge=br0",
    "  mac = 00:16:3e:00:00:01 ,  bridge =br0  ",
    ",mac=00:16:3e:00:00:01,,bridge=br0,",
    "bridge=br0,mac=00:16:3E:0:0:1",
    "bridge=br0,mac=00-16-3e-00-00-01",
    "bridge=br0\t,\tmac=00:16:3e:00:00:01",
])
def test_equivalent_spellings(text: str) -> None:
    assert parse_vif_spec(text) == VifSpec(mac="00:16:3e:00:00:01", bridge="br0")


def test_netdev_is_gatewaydev() -> None:
    assert parse_vif_spec("netdev=eth1").gatewaydev == "eth1"


def test_trusted_flag() -> None:
    assert parse_vif_spec("trusted").trusted is True
    assert parse_vif_spec("untrusted ,bridge=br0").trusted is False
    assert parse_vif_spec("bridge=br0").trusted is None


def test_documented_keys_are_kept_in_order() -> None:
    spec = parse_vif_spec("vlan=10p/20,bridge=br0,forwarddev=eth2,colo_compare_out=x")
    assert spec.extra == (("vlan", "10p/20"), ("forwarddev", "eth2"),
                          ("colo_compare_out", "x"))
    assert spec.bridge == "br0"


def test_colo_keys_of_xl_4_12() -> None:
    colo = [k for k in EXTRA_KEYS if k.startswith("colo_")]
    assert len(colo) == len(set(colo)) == 48
    for key in ("colo_sock_redirector2_port", "colo_filter_sec_rewriter0_queue",
                "colo_checkpoint_host", "colo_compare_notify_dev"):
        assert key in colo
        assert parse_vif_spec(f"{key}=v").extra == ((key, "v"),)


def test_value_may_contain_equals() -> None:
    assert parse_vif_spec("script=/etc/xen/scripts/vif-x a=b").script == \
        "/etc/xen/scripts/vif-x a=b"


def test_ip_words_are_normalised() -> None:
    assert parse_vif_spec("ip= 10.0.0.1   10.0.0.0/24 ").ip == "10.0.0.1 10.0.0.0/24"


def test_spec_is_frozen_and_hashable() -> None:
    spec = parse_vif_spec("bridge=br0,vlan=10")
    with pytest.raises(AttributeError):
        spec.bridge = "br1"  # type: ignore[misc]
    assert hash(spec) == hash(parse_vif_spec("bridge=br0,vlan=10"))


# --- every error --------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("foo=1", "unknown vif key 'foo' in 'foo=1'"),
    ("brige=br0", "did you mean 'bridge'?"),
    ("colo_bogus=1", "unknown vif key 'colo_bogus'"),
    ("bridge", "vif key 'bridge' needs a value: write bridge=VALUE"),
    ("vlan", "vif key 'vlan' needs a value"),
    ("xenbr0", "vif item 'xenbr0' is not key=value"),
    ("=br0", "has no key before '='"),
    ("trusted=yes", "vif flag 'trusted' takes no value"),
    ("trusted,untrusted", "trusted/untrusted given twice"),
    ("bridge=", "vif key 'bridge' has an empty value"),
    ("bridge=  ,mac=00:16:3e:00:00:01", "vif key 'bridge' has an empty value"),
    ("mac=00:16:3e:00:00:01,mac=00:16:3e:00:00:02", "vif key 'mac' is given twice: keep one"),
    ("netdev=eth0,gatewaydev=eth1", "given twice (as 'netdev' and 'gatewaydev')"),
    ("vlan=1,vlan=2", "vif key 'vlan' is given twice"),
    ("type=pv", "vif type 'pv' is not one of vif, ioemu"),
    ("devid=-1", "vif devid '-1' is not a decimal number"),
    ("devid=x", "vif devid 'x' is not a decimal number"),
    ("devid=2147483648", "vif devid 2147483648 is out of range: use 0 to 2147483647"),
    ("mtu=67", "vif mtu 67 is out of range: use 68 to 65535"),
    ("mtu=65536", "vif mtu 65536 is out of range"),
    ("mtu=1500.0", "vif mtu '1500.0' is not a decimal number"),
    ("ip=10.0.0.300", "vif ip '10.0.0.300' is not an IPv4 or IPv6 address"),
    ("ip=10.0.0.1 host", "vif ip 'host' is not"),
    ("bridge=a-bridge-name-too-long", "vif bridge 'a-bridge-name-too-long' is 22 bytes long"),
    ("vifname=vif1.0/x", "vif vifname 'vif1.0/x' contains '/'"),
    ("gatewaydev=eth0:1", "vif gatewaydev 'eth0:1' contains ':'"),
    ("netdev=..", "vif netdev '..' is not a valid interface name"),
    ("bridge=a b", "contains ' '"),
    ("mac=00:16:3e:00:00", "mac '00:16:3e:00:00' is not a MAC address"),
    ("mac=00:16:3e:00:00:01:02", "is not a MAC address"),
    ("mac=00:16:3e:00:00:100", "is not a MAC address"),
    ("mac=00:16:3e-00-00-01", "is not a MAC address"),
    ("mac=0g:16:3e:00:00:01", "is not a MAC address"),
    ("mac=01:00:5e:00:00:01", "mac 01:00:5e:00:00:01 is a multicast address"),
    ("mac=FF:FF:FF:FF:FF:FF", "mac ff:ff:ff:ff:ff:ff is a multicast address"),
    ("mac=00:00:00:00:00:00", "leave mac out for a random address"),
    ("rate=", "vif key 'rate' has an empty value"),
    ("rate=@20ms", "rate '@20ms' gives no rate"),
    ("rate=10Mb", "rate '10Mb' is not NUMBER[K|M|G](B|b)/s"),
    ("rate=10mb/s", "is not NUMBER[K|M|G](B|b)/s"),
    ("rate=10Tb/s", "is not NUMBER[K|M|G](B|b)/s"),
    ("rate=1.5MB/s", "is not NUMBER[K|M|G](B|b)/s"),
    ("rate=0MB/s", "rate '0MB/s': the rate is zero"),
    ("rate=010MB/s", "write the rate 010 without leading zeros"),
    ("rate=4294967296B/s", "the rate 4294967296 is too large"),
    ("rate=1MB/s@", "rate interval '' is not NUMBER[us|ms|s]"),
    ("rate=1MB/s@20ns", "rate interval '20ns' is not NUMBER[us|ms|s]"),
    ("rate=1MB/s@20ms@1", "rate interval '20ms@1' is not"),
    ("rate=1MB/s@0ms", "the interval is zero"),
    ("rate=1MB/s@020ms", "write the interval 020 without leading zeros"),
    ("rate=1MB/s@4294967296us", "the interval 4294967296 is too large"),
    ("rate=1MB/s@4295s", "rate interval '4295s' is too long"),
    ("rate=4294967295GB/s", "overflows (rate times interval exceeds 64 bits)"),
    ("rate=7b/s", "gives 0 bytes per 50000 us interval"),
    ("rate=1KB/s@999us", "gives 0 bytes per 999 us interval"),
])
def test_errors(text: str, message: str) -> None:
    with pytest.raises(VifSpecError) as info:
        parse_vif_spec(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_error_is_a_value_error() -> None:
    assert issubclass(VifSpecError, ValueError)


# --- rates --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "bytes_per_interval", "interval_us"), [
    ("1B/s@1s", 1, 1_000_000),
    ("1000B/s@1ms", 1, 1000),
    ("1KB/s@1s", 1000, 1_000_000),             # K is 1000, not 1024
    ("1MB/s@1s", 1_000_000, 1_000_000),
    ("1GB/s@1s", 1_000_000_000, 1_000_000),
    ("8b/s@1s", 1, 1_000_000),
    ("15b/s@1s", 1, 1_000_000),               # bits / 8 rounds down
    ("1Kb/s@1s", 125, 1_000_000),
    ("1Mb/s@1s", 125_000, 1_000_000),
    ("1Gb/s@1s", 125_000_000, 1_000_000),
    ("1MB/s@20", 20_000_000, 20_000_000),     # a bare interval is seconds (libxlu)
    ("1MB/s@20s", 20_000_000, 20_000_000),
    ("1MB/s@20m", 20_000, 20_000),
    ("1MB/s@20u", 20, 20),
    ("1MB/s@20us", 20, 20),
    ("333B/s@10ms", 3, 10_000),               # 3.33 bytes per interval rounds down
    ("1MB/s @ 20ms", 20_000, 20_000),
    ("4294967295GB/s@4us", 17_179_869_180_000, 4),
    ("1B/s@4294s", 4294, 4_294_000_000),
])
def test_rate_arithmetic(text: str, bytes_per_interval: int, interval_us: int) -> None:
    assert parse_rate(text) == Rate(bytes_per_interval, interval_us)


def test_default_interval_is_50ms() -> None:
    assert parse_rate("1MB/s").interval_us == 50_000


def test_rate_xenstore_value() -> None:
    assert parse_rate("10Mb/s").xenstore_value() == "62500,50000"


# --- MACs, names --------------------------------------------------------------

def test_parse_mac_normalises() -> None:
    assert parse_mac("0:16:3E:A:b:C") == "00:16:3e:0a:0b:0c"
    assert parse_mac("02:00:00:00:00:01") == "02:00:00:00:00:01"  # locally administered


def test_random_mac_follows_libxl() -> None:
    rng = random.Random(7)
    macs = {random_mac(rng) for _ in range(500)}
    assert len(macs) == 500
    for mac in macs:
        assert re.fullmatch(r"00:16:3e:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}", mac), mac
        assert parse_mac(mac) == mac
    assert any(mac[9] == "7" for mac in macs)  # the whole lower half is used
    assert random_mac(random.Random(1)) == random_mac(random.Random(1))


def test_random_mac_default_source() -> None:
    assert random_mac().startswith("00:16:3e:")
    assert int(random_mac()[9:11], 16) < 0x80


def test_vif_name() -> None:
    assert vif_name(1, 0) == "vif1.0"
    assert vif_name(32767, 123456) == "vif32767.123456"
    with pytest.raises(ValueError, match="longer than 15"):
        vif_name(32767, 1234567)
    with pytest.raises(ValueError, match="cannot be negative"):
        vif_name(-1, 0)


def test_check_ifname() -> None:
    assert check_ifname("x" * 15) == "x" * 15
    with pytest.raises(VifSpecError, match="16 bytes long"):
        check_ifname("x" * 16)
    with pytest.raises(VifSpecError, match="cannot be empty"):
        check_ifname("")
    with pytest.raises(VifSpecError, match="is 16 bytes long"):
        check_ifname("é" * 8)  # bytes, not characters
