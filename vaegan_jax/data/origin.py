"""Where a data set came from, recorded so that a checkpoint can load its training data again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from vaegan_jax.data.dataset import Dataset
from vaegan_jax.data.loaders import load_dataset
from vaegan_jax.data.synthetic import load_synthetic
from vaegan_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class DataOrigin:
    """A data file (absolute path), the embedded stand-in (its seed), or neither: data made in memory."""

    file: str | None = None
    synthetic_seed: int | None = None

    @classmethod
    def of_file(cls, path: str | Path) -> DataOrigin:
        """The origin of data read from `path`."""
        return cls(file=str(Path(path).absolute()))

    @classmethod
    def of_source(cls, source: str) -> DataOrigin:
        """The file a data set's source names, if there is one; else an unknown origin."""
        return cls.of_file(source) if Path(source).is_file() else cls()

    @classmethod
    def guess(cls, dataset: Dataset) -> DataOrigin:
        """The file a loaded data set names as its source, if there is one; else an unknown origin."""
        return cls.of_source(dataset.source)

    @property
    def known(self) -> bool:
        """Whether the data can be loaded again from this origin."""
        return self.file is not None or self.synthetic_seed is not None

    def load(self) -> Dataset:
        """The data set again, from its file or by generating the stand-in."""
        if self.synthetic_seed is not None:
            return load_synthetic(self.synthetic_seed)
        if self.file is None:
            raise DataError("no file or generator recorded to load the data from; pass --data PATH")
        if not Path(self.file).is_file():
            raise DataError(f"{self.file}: the data the run was trained on is not there; pass --data PATH")
        return load_dataset(self.file)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> DataOrigin:
        """The origin a checkpoint stored (its fields, as `dataclasses.asdict` writes them)."""
        return cls(file=document.get("file"), synthetic_seed=document.get("synthetic_seed"))
