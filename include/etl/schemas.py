"""Schemas of the Olympics inputs: column types, required keys and value domains.

A schema is data, not code: the same description drives parsing and validation on every
engine (:mod:`include.etl.parse`), the Spark output schema and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NA_TOKENS = ("NA", "")  # what the source files write for a missing value


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "str"  # "int" | "float" | "str"
    required: bool = False  # a missing value rejects the row
    domain: tuple[str, ...] | None = None  # allowed values (after NA handling)
    range: tuple[float, float] | None = None  # inclusive bounds for numbers


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()  # unique key: later duplicates are rejected (reference tables only)
    reference: bool = False  # small lookup table: read as one partition
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


ATHLETES = TableSchema(
    "athletes",
    (
        Column("ID", "int", required=True),
        Column("Name"),
        Column("Sex", domain=("M", "F")),
        Column("Age", "int", range=(0, 120)),
        Column("Height", "float", range=(0, 300)),
        Column("Weight", "float", range=(0, 500)),
        Column("Team"),
        Column("NOC", required=True),
        Column("Games"),
        Column("Year", "int", required=True, range=(1800, 2200)),
        Column("Season", required=True, domain=("Summer", "Winter")),
        Column("City"),
        Column("Sport"),
        Column("Event"),
        Column("Medal", domain=("Gold", "Silver", "Bronze")),
    ),
)

REGIONS = TableSchema(
    "regions",
    (Column("NOC", required=True), Column("region"), Column("notes")),
    key=("NOC",),
    reference=True,
)

VENUES = TableSchema(
    "venues",
    (
        Column("Year", "int", required=True, range=(1800, 2200)),
        Column("Season", required=True, domain=("Summer", "Winter")),
        Column("City", required=True),
        Column("lon", "float", range=(-180, 180)),
        Column("lat", "float", range=(-90, 90)),
    ),
    key=("Year", "Season", "City"),
    reference=True,
)

SCHEMAS = {s.name: s for s in (ATHLETES, REGIONS, VENUES)}

# Columns every parsed frame carries besides the schema's own, before it is split into
# accepted rows and rejects.
REJECT_COLUMNS = ("_source", "_line", "_raw", "_reason")
