"""The Olympics inputs' contracts: columns, types, required keys and allowed values, as data.

The reader applies them identically on every engine; a row breaking one is rejected with a
reason such as ``Sex not in M/F``, ``missing required ID``, ``Age outside [0, 120]``,
``Age is not a number`` or ``duplicate key (NOC)``. See ``README.md`` in this folder for the
files' quirks.
"""

from __future__ import annotations

from include.etl.contract import Column, Dataset

SEASONS = ("Summer", "Winter")
YEARS = (1800, 2200)

ATHLETES = Dataset(
    "athletes",
    (
        Column("ID", "integer", required=True),
        Column("Name"),
        Column("Sex", allowed=("M", "F")),
        Column("Age", "integer", range=(0, 120)),
        Column("Height", "float", range=(0, 300)),
        Column("Weight", "float", range=(0, 500)),
        Column("Team"),
        Column("NOC", required=True),
        Column("Games"),
        Column("Year", "integer", required=True, range=YEARS),
        Column("Season", required=True, allowed=SEASONS),
        Column("City"),
        Column("Sport"),
        Column("Event"),
        Column("Medal", allowed=("Gold", "Silver", "Bronze")),
    ),
    description="One row per athlete and event entered (athlete_events.csv, Kaggle 120 years of Olympic history).",
)

REGIONS = Dataset(
    "regions",
    (Column("NOC", required=True), Column("region"), Column("notes")),
    key=("NOC",),
    reference=True,
    description="NOC code -> region (noc_regions.csv).",
)

VENUES = Dataset(
    "venues",
    (
        Column("Year", "integer", required=True, range=YEARS),
        Column("Season", required=True, allowed=SEASONS),
        Column("City", required=True),
        Column("lon", "float", range=(-180, 180)),
        Column("lat", "float", range=(-90, 90)),
    ),
    key=("Year", "Season", "City"),
    reference=True,
    description="Host city coordinates per Games (host_city_locations.csv).",
)

DATASETS = {d.name: d for d in (ATHLETES, REGIONS, VENUES)}

# Default input of each dataset, relative to ETL_DATA_DIR (the trigger form overrides them).
INPUTS = {
    "athletes": "olympics/athlete_events_head.csv",
    "regions": "olympics/noc_regions.csv",
    "venues": "olympics/host_city_locations.csv",
}
