"""Errors of the KVM layer.  Each message says what is missing and what to do."""

from __future__ import annotations


class KvmError(Exception):
    """A KVM ioctl failed or the host lacks something pyxen needs."""


class KvmUnavailable(KvmError):
    """/dev/kvm is missing, not accessible, or lacks a required capability."""
