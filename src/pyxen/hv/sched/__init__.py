"""pyxen's vCPU schedulers (Xen's Credit2, Credit, RTDS and null) behind one interface.

See ``interface`` for the contract.  Schedulers are registered explicitly in
``SCHEDULERS`` (name -> class); nothing registers itself at import time.
"""
