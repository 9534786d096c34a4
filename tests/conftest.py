"""Shared by every test directory.

pytest (in its default "prepend" import mode) puts the directory of each
conftest.py on ``sys.path``; this file's presence is what makes the helpers
in ``tests/`` (``netns``) importable from ``tests/unit`` and
``tests/integration`` alike.
"""
