"""The configuration contract and its files.

* :mod:`.checks`: the value checks (raw string in, parsed value or ValueError out);
* :mod:`.contract`: every environment variable (name, default, check, doc) and ``Settings``;
* :mod:`.render`: ``.env.example`` and ``docs/configuration.md``, rendered from the contract;
* :mod:`.envfile`: reading and creating the ``.env`` file that compose and the native runtime
  share.
"""
