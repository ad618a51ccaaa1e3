"""Which modules are verified, and the checks of a downloaded zip or go.mod before it is committed."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ChecksumError
from ..patterns import match_any
from . import dirhash
from .client import SumDB


class Verifier:
    """Verify module zips and go.mod files against one checksum database, or nothing.

    sumdb None means verification is off (-gosumdb off). Modules matching gonosumdb, and those
    private(module) says are private, are never verified.
    """

    def __init__(self, sumdb: SumDB | None, gonosumdb: tuple[str, ...] = (),
                 private: Callable[[str], bool] = lambda module: False) -> None:
        self.sumdb = sumdb
        self.gonosumdb = gonosumdb
        self.private = private

    @property
    def db_name(self) -> str:
        """Return the name of the database verified against, "" when verification is off."""
        return self.sumdb.db.name if self.sumdb is not None else ""

    def needs(self, module: str) -> bool:
        """Report whether module's files are checked.

        They are when verification is on and module is neither in -gonosumdb nor private.
        """
        return self.sumdb is not None and not match_any(self.gonosumdb, module) and not self.private(module)

    def check_zip(self, module: str, version: str, path: str) -> None:
        """Check a downloaded, not yet committed zip at path, when module needs it.

        Raises ChecksumError (nothing may be committed then) or UpstreamError when the
        database cannot answer.
        """
        if self.sumdb is None or not self.needs(module):
            return
        try:
            got = dirhash.hash_zip(path, f"{module}@{version}/")
        except ValueError as exc:
            raise ChecksumError(f"{module}@{version}: invalid module zip: {exc}") from None
        self.sumdb.check(module, version, False, got)

    def check_mod(self, module: str, version: str, data: bytes) -> None:
        """Check a downloaded go.mod when module needs it; raises as check_zip does."""
        if self.sumdb is not None and self.needs(module):
            self.sumdb.check(module, version, True, dirhash.hash_gomod(data))
