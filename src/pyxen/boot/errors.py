"""The one exception raised by :mod:`pyxen.boot`.

Everything in this package reads untrusted input (kernel images, user
configuration), so every failure is reported as a :class:`BootError` whose
message is one line naming the file or value at fault, what is wrong with it
and, where there is one, what the user can do about it.  No other exception
type escapes the parsers, whatever bytes they are given.
"""


class BootError(Exception):
    """A kernel image, module or domain layout cannot be used to boot a guest."""
