"""Deterministic, streaming generator of the Olympics ``athlete_events.csv`` format, at any size.

The output matches the real file byte for byte in its conventions:

* header and text fields double-quoted, quotes inside a field doubled (``"Cornelia ""Cor"" Aalten"``);
* ``ID`` quoted as well (the real file quotes it: ``"1","A Dijiang",...``), ``Age``, ``Height``,
  ``Weight`` and ``Year`` unquoted; a missing value is a bare ``NA`` (never quoted);
* lines end in CRLF (the last one too), UTF-8 without BOM.

Values come from the real data in ``data_dir`` (default ``$ETL_DATA_DIR/olympics``): NOCs (and ``Team`` near their region) from
``noc_regions.csv`` plus ~1 % of rows with NOCs absent from it (``SGP`` as in the real data,
``IOP``, ``ZZX``); ``Games, Year, Season, City`` together from one ``host_city_locations.csv``
row; ``Sport``/``Event`` from the events of ``athlete_events_head.csv`` (matching the sport's
season and the athlete's sex); weights, age distribution and name parts from that sample.
Missing rates follow the full real file: ``Age`` ~3.5 %, ``Height`` and ``Weight`` ~22 %,
``Medal`` ~85 %. Each athlete has one or more rows (consecutive, same ``ID``), as in the real file.

Determinism: the random stream is keyed by ``(seed, block)`` for fixed blocks of
:data:`BLOCK_ROWS` rows and uses only uniform doubles plus exact arithmetic (no transcendental
functions), so the same ``seed`` gives byte-identical output regardless of ``chunk_rows`` or
``files``, and the first N rows of a bigger run equal a run of N rows. Memory is flat: one
block of random numbers plus at most ``chunk_rows`` formatted lines are held at a time.

``edge_cases=True`` mixes in ~1.2 % of rows that are valid but nasty: all optional fields
``NA``, NOCs absent from the regions file, exact duplicate lines, names with quotes, commas,
apostrophes and non-ASCII (including astral-plane and combining characters), values at the
range bounds. None contains a newline inside a field (the Dask engine relies on that) and all
of them pass :data:`include.pipelines.olympics.datasets.ATHLETES` with zero rejects.

CLI::

    python -m include.pipelines.olympics.generate --rows 1000000 --out /tmp/gen1m [--seed 0] [--files 4] [--edge-cases]

``--out`` ending in ``.csv`` is the athletes file itself (with ``--files K > 1``: a folder of the
same name without ``.csv``). Any other ``--out`` is an output *directory* that becomes a
complete input set: ``athlete_events.csv`` (or the ``athlete_events/`` folder of
``athlete_events_part-00000.csv`` ... parts, each with its own header) plus byte-for-byte
copies of ``noc_regions.csv`` and ``host_city_locations.csv``. ``--copy-reference`` /
``--no-copy-reference`` force the copies on or off.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUBDIR = "olympics"  # the pipeline's folder under ETL_DATA_DIR
COLUMNS = ("ID", "Name", "Sex", "Age", "Height", "Weight", "Team", "NOC", "Games", "Year", "Season",
           "City", "Sport", "Event", "Medal")
ATHLETES_FILE = "athlete_events.csv"
PART_DIR = "athlete_events"
PART_NAME = "athlete_events_part-{:05d}.csv"
REFERENCE_FILES = ("noc_regions.csv", "host_city_locations.csv")
SAMPLE_FILE = "athlete_events_head.csv"
EOL = "\r\n"
NA = "NA"

BLOCK_ROWS = 4096  # unit of the random stream: output does not depend on chunk_rows or files

# Rates (per row unless said otherwise), close to the full real file (271,116 rows).
P_NEW_ATHLETE = 0.55  # geometric rows per athlete: mean ~1.8, 55 % of athletes with one row
P_AGE_NA = 0.035  # per athlete
P_HEIGHT_NA = 0.22  # per athlete
P_WEIGHT_NA_GIVEN_HEIGHT_NA = 0.955  # weight is mostly missing together with height
P_WEIGHT_NA_ALONE = 0.012
P_MEDAL_NA = 0.853
P_ABSENT_NOC = 0.01  # per athlete: NOC missing from noc_regions.csv
P_TEAM_SUFFIX = 0.03  # "Japan-1", "Russia-2" as in the real file
CAREER_GAMES = 5  # an athlete's rows are spread over a window of this many consecutive Games
P_MULTI_EVENT = 0.5  # athletes who enter all their sport's events before the next Games (else: Games first)
P_HALF_KG = 0.03  # weights like 76.5
P_MIDDLE = 0.35
P_NICK = 0.04
P_SUFFIX = 0.02
P_MAIDEN = 0.06  # female athletes only
P_CURATED_FIRST = 0.08  # first names from the curated (mostly non-ASCII) list
P_CURATED_LAST = 0.6  # the sample's last names all start with "A": mix in a broad list

# NOCs that occur in athlete rows but not in noc_regions.csv (SGP is the real-data case).
ABSENT_NOCS = (("SGP", "Singapore", 0.8), ("IOP", "Independent Olympic Participants", 0.1), ("ZZX", "Mixed team", 0.1))
EDGE_ABSENT_NOCS = (("ROC", "ROC"), ("OAR", "Olympic Athletes from Russia"), ("EOR", "Refugee Olympic Team"),
                    ("AIN", "Individual Neutral Athletes"), ("QQQ", "Nowhere, Land"))
EDGE_NAMES = (
    "Zoë O'Brien, Jr.", 'Jean-Pierre "JP" Müller', "Søren Ødegaard", "José Martínez",
    '"Quoted" At Start', 'Ends With "Quote"', 'Only "" Quotes ""', "Many, Commas, Here, Sr.",
    "Ñúñez-Ibáñez (-D'Arcy)", "李娜", "Ἀλέξανδρος Παπαδόπουλος", "Владимир Сальников",
    "Zoe\u0308 Combining", "Ana 🏅 Silva", "'Single' Quotes", "Apostrophe's, \"Both\", Kinds",
    "Ólafur Þórðarson", "Nguyễn Thị Ánh Viên", "Semi;colon | Pipe", "  Padded Name  ",
)
EDGE_KINDS = ("all_na", "absent_noc", "duplicate", "nasty_name", "bounds")
EDGE_CUTS = (0.002, 0.004, 0.006, 0.010, 0.012)  # cumulative per-row probabilities of EDGE_KINDS

FIRST_CURATED = {
    "M": ("José", "Søren", "Jean-Pierre", "Jürgen", "Łukasz", "Øystein", "François", "Nicolás", "Ömer",
          "Björn", "Thành", "Mikaël", "Iñaki", "Dragoş", "Jiří", "Ștefan", "Đorđe", "Hélio", "Zoltán",
          "Ólafur", "André", "Sébastien", "Răzvan", "Tomáš", "Kōsuke"),
    "F": ("Zoë", "Chloë", "Inés", "Agnès", "Małgorzata", "Åsa", "Begoña", "Renée", "Zsófia", "Anaïs",
          "Şule", "Lucía", "Hélène", "Ágnes", "Björk", "Jūratė", "Noémie", "Dóra", "Mária", "Sigríður",
          "Anne-Sophie", "Ewa-Łucja", "Rūta", "Tüür", "Ingrid"),
}
LAST_CURATED = (
    "Smith Johnson Williams Brown Jones Miller Davis Garcia Rodriguez Wilson Martin Anderson Taylor Thomas "
    "Moore Jackson White Harris Clark Lewis Walker Hall Young King Wright Scott Green Baker Nelson Carter "
    "Mitchell Roberts Turner Phillips Campbell Parker Evans Edwards Collins Stewart Morris Murphy Cook Rogers "
    "Morgan Cooper Peterson Reed Bailey Kelly Howard Ward Richardson Wood Watson Brooks Bennett Gray Hughes "
    "Schmidt Schneider Fischer Weber Wagner Becker Hoffmann Schulz Koch Richter Klein Wolf Neumann Rossi Russo "
    "Ferrari Esposito Bianchi Romano Colombo Ricci Dubois Durand Lefebvre Moreau Laurent Simon Michel Leroy "
    "Ivanov Petrov Smirnov Kuznetsov Popov Sokolov Kovalenko Nowak Kowalski Novak Horvat Jensen Nielsen Hansen "
    "Pedersen Andersen Larsen Johansson Karlsson Nilsson Eriksson Virtanen Korhonen Nieminen Tanaka Suzuki "
    "Takahashi Watanabe Ito Yamamoto Nakamura Kim Lee Park Choi Wang Li Zhang Liu Chen Yang Huang Zhao Singh "
    "Kumar Sharma Patel Silva Santos Oliveira Souza Pereira Costa Hernandez Lopez Gonzalez Perez Ramirez Torres "
    "Flores Mohamed Ahmed Hassan Ali Ibrahim Mahmoud Okafor Mensah Kipchoge Kiprop Cheruiyot Jansen Visser "
    "Bakker Peeters Janssens Nagy Kovacs Szabo Popescu Ionescu Papadopoulos Yilmaz Kaya Demir"
).split() + [
    "Van der Berg", "De Jong", "O'Brien", "O'Sullivan", "D'Amico", "D'Arcy", "N'Diaye", "Müller", "Ødegaard",
    "Martínez", "Sánchez", "Nguyễn", "Çelik", "Dvořák", "Łukasiewicz", "Gößling", "Öztürk", "Kovačević", "Jõgi",
    "Þórsdóttir", "Søndergaard", "Håkansson", "Fernández", "Gómez", "Núñez", "Strauß", "Björklund", "Šimić",
    "Wiśniewska", "Čech", "Lévesque", "Côté", "Gagné", "Mäkinen", "Hämäläinen", "Ó Súilleabháin",
]
SUFFIXES = (", Jr.", ", Sr.", " III", " II")
SUFFIX_CUTS = (0.75, 0.9, 0.97, 1.0)
MEDALS = ("Gold", "Silver", "Bronze")

_TOKEN = re.compile(r"^[A-Z][A-Za-z'\-]+$")
_NICK = re.compile(r'"([A-Za-z\-\' ]+)"')


def q(text: str) -> str:
    """CSV-quote a text field the way the real file does."""
    return '"' + text.replace('"', '""') + '"'


class _Grouped:
    """Weighted sampling of value indices within groups, by inverse CDF (fully vectorised).

    ``groups[g]`` is a list of ``(value, weight)``. ``sample(g, u)`` maps group numbers and
    uniforms in [0, 1) to values.
    """

    def __init__(self, groups: list[list[tuple[int, float]]]) -> None:
        import numpy as np

        values, cdf, starts, ends = [], [], [], []
        for g, pairs in enumerate(groups):
            starts.append(len(values))
            total = float(sum(w for _, w in pairs))
            acc = 0.0
            for v, w in pairs:
                acc += w
                values.append(v)
                cdf.append(g + acc / total)
            if pairs:
                cdf[-1] = g + 1.0
            ends.append(len(values))
        self.values = np.asarray(values, dtype=np.int64)
        self.cdf = np.asarray(cdf, dtype=np.float64)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)

    def sample(self, group: Any, u: Any) -> Any:
        return self.values[self.sample_pos(group, u)]

    def sample_pos(self, group: Any, u: Any) -> Any:
        """Positions in :attr:`values` (group ``g`` owns ``starts[g]:ends[g]``)."""
        import numpy as np

        pos = np.searchsorted(self.cdf, group + u, side="right")
        return np.clip(pos, self.starts[group], np.maximum(self.ends[group] - 1, self.starts[group]))


def _normal(u4: Any) -> Any:
    """Approximately standard normal from 4 uniforms (Irwin-Hall): exact IEEE arithmetic only."""
    return (u4.sum(axis=0) - 2.0) * math.sqrt(3.0)


def _read_rows(path: Path) -> list[list[str]]:
    # newline="" keeps the csv module in charge: it accepts CRLF, LF and the bare CR of noc_regions.csv.
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@dataclass
class _Model:
    """Everything drawn from the reference data, pre-formatted as CSV segments."""

    noc_team: Any  # object array: '"Team","NOC"' segments, 4 variants per NOC (base, -1, -2, -3)
    noc_na_team: Any  # 'NA,"NOC"' per NOC
    noc_sampler: _Grouped
    n_regions_nocs: int
    absent_sampler: _Grouped
    games: Any  # '"1992 Summer",1992,"Summer","Barcelona"' per host row
    games_na: Any  # 'NA,1992,"Summer",NA'
    games_sampler: _Grouped  # group = season (0 Summer, 1 Winter)
    games_next: Any  # [k, host row] -> k-th Games of the window that starts there (shifted to fit the season)
    games_year: Any
    events: Any  # '"Sport","Event"'
    sport_sampler: _Grouped  # group = sex (0 M, 1 F) -> sport index
    sport_season: Any
    event_sampler: _Grouped  # group = sex * n_sports + sport -> event index
    n_sports: int
    age_sampler: _Grouped
    first_sampler: _Grouped  # group = sex -> index into first_names
    first_names: Any  # object arrays of already CSV-escaped parts
    middle_names: Any  # '' or ' First'
    nicks: Any  # '' or ' ""Nick""'
    n_last_curated: int
    last_names: Any
    maidens: Any  # '' or ' (-Last)'
    height_mean: tuple[float, float]
    height_sd: tuple[float, float]
    bmi_mean: tuple[float, float]
    bmi_sd: tuple[float, float]
    edge_names: Any
    edge_absent: Any
    p_female: float


def _load_model(data_dir: Path) -> _Model:  # noqa: C901 - a flat list of lookup tables
    import numpy as np

    for name in (SAMPLE_FILE, *REFERENCE_FILES):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"generator reference data {data_dir / name} does not exist")
    sample_rows = _read_rows(data_dir / SAMPLE_FILE)
    header, sample = sample_rows[0], [r for r in sample_rows[1:] if len(r) == len(COLUMNS)]
    if tuple(header) != COLUMNS:
        raise ValueError(f"{data_dir / SAMPLE_FILE}: unexpected header {header}")
    col = {c: i for i, c in enumerate(COLUMNS)}

    # NOCs: regions file, weighted by (damped) frequency in the sample.
    regions = [r for r in _read_rows(data_dir / "noc_regions.csv")[1:] if r and r[0]]
    noc_counts = Counter(r[col["NOC"]] for r in sample)
    teams = []
    for noc, region, *rest in regions:
        notes = rest[0] if rest else ""
        team = notes if notes and (region in ("", NA) or noc_counts.get(noc, 0) == 0) else region
        teams.append((noc, team if team not in ("", NA) else noc))
    nocs = teams + [(noc, team) for noc, team, _ in ABSENT_NOCS]
    noc_team = np.array([q(t + s) + "," + q(n) for n, t in nocs for s in ("", "-1", "-2", "-3")], dtype=object)
    noc_na_team = np.array([NA + "," + q(n) for n, _ in nocs], dtype=object)
    noc_sampler = _Grouped([[(i, 1.0 + math.sqrt(noc_counts.get(n, 0))) for i, (n, _) in enumerate(teams)]])
    absent_sampler = _Grouped([[(len(teams) + i, w) for i, (_, _, w) in enumerate(ABSENT_NOCS)]])

    # Games: host rows taken whole, weighted by the sample's frequency.
    hosts = [r for r in _read_rows(data_dir / "host_city_locations.csv")[1:] if len(r) >= 3]
    games_counts = Counter((r[col["Year"]], r[col["Season"]], r[col["City"]]) for r in sample)
    games = np.array([f"{q(y + ' ' + s)},{int(y)},{q(s)},{q(c)}" for y, s, c, *_ in hosts], dtype=object)
    games_na = np.array([f"{NA},{int(y)},{q(s)},{NA}" for y, s, c, *_ in hosts], dtype=object)
    seasons = ("Summer", "Winter")
    games_next = np.zeros((CAREER_GAMES, len(hosts)), dtype=np.int64)
    for season in seasons:
        order = sorted((i for i, r in enumerate(hosts) if r[1] == season), key=lambda i: (int(hosts[i][0]), hosts[i][2]))
        for j, i in enumerate(order):
            first = max(0, min(j, len(order) - CAREER_GAMES))
            for k in range(CAREER_GAMES):
                games_next[k, i] = order[min(first + k, len(order) - 1)]
    games_sampler = _Grouped([
        [(i, 1.0 + games_counts.get((y, s, c), 0)) for i, (y, s, c, *_) in enumerate(hosts) if s == season]
        for season in seasons
    ])

    # Sports and events from the sample: season of each sport, events by sex (Men's / Women's / Mixed).
    season_votes: dict[str, Counter] = {}
    event_counts: Counter = Counter()
    for r in sample:
        season_votes.setdefault(r[col["Sport"]], Counter())[r[col["Season"]]] += 1
        event_counts[(r[col["Sport"]], r[col["Event"]])] += 1
    sports = sorted(season_votes)
    sport_season = np.array([seasons.index(season_votes[s].most_common(1)[0][0]) for s in sports], dtype=np.int64)
    event_list = sorted(event_counts)
    events = np.array([q(s) + "," + q(e) for s, e in event_list], dtype=object)
    by_group: list[list[tuple[int, float]]] = [[] for _ in range(2 * len(sports))]
    for i, (s, e) in enumerate(event_list):
        for sex, tag in ((0, "Men's"), (1, "Women's")):
            if tag in e or "Mixed" in e or ("Men's" not in e and "Women's" not in e):
                by_group[sex * len(sports) + sports.index(s)].append((i, float(event_counts[(s, e)])))
    sport_sampler = _Grouped([
        [(k, sum(w for _, w in by_group[sex * len(sports) + k])) for k in range(len(sports))
         if by_group[sex * len(sports) + k]]
        for sex in (0, 1)
    ])

    # Ages: the sample's histogram, smoothed, within 10..70.
    ages = Counter(int(r[col["Age"]]) for r in sample if r[col["Age"]] != NA)
    age_sampler = _Grouped([[(a, ages.get(a, 0) + 0.2) for a in range(10, 71)]])

    # Height and BMI by sex, from the sample.
    stats: dict[int, tuple[list[float], list[float]]] = {0: ([], []), 1: ([], [])}
    for r in sample:
        h, w = r[col["Height"]], r[col["Weight"]]
        if h != NA and w != NA:
            sex = 1 if r[col["Sex"]] == "F" else 0
            stats[sex][0].append(float(h))
            stats[sex][1].append(float(w) / (float(h) / 100) ** 2)

    def mean_sd(xs: list[float], default: tuple[float, float]) -> tuple[float, float]:
        if len(xs) < 10:
            return default
        m = sum(xs) / len(xs)
        return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))

    hm = (mean_sd(stats[0][0], (179.0, 9.0)), mean_sd(stats[1][0], (168.0, 8.5)))
    bm = (mean_sd(stats[0][1], (23.5, 2.8)), mean_sd(stats[1][1], (21.0, 2.3)))

    # Names: tokens of the sample's names, plus curated lists with non-ASCII letters and apostrophes.
    firsts: dict[str, set[str]] = {"M": set(), "F": set()}
    lasts: set[str] = set()
    nick_set: set[str] = {"JP"}
    for r in sample:
        name = r[col["Name"]]
        nick_set.update(m.strip() for m in _NICK.findall(name))
        tokens = re.sub(r'\s*\(.*?\)|"[^"]*"|,.*$', " ", name).split()
        if len(tokens) >= 2 and _TOKEN.match(tokens[0]) and r[col["Sex"]] in firsts:
            firsts[r[col["Sex"]]].add(tokens[0])
        if len(tokens) >= 2 and _TOKEN.match(tokens[-1]):
            lasts.add(tokens[-1])
    first_list = []
    first_groups: list[list[tuple[int, float]]] = []
    for sex in ("M", "F"):
        plain, curated = sorted(firsts[sex]) or ["Alex"], FIRST_CURATED[sex]
        group = [(len(first_list) + i, (1 - P_CURATED_FIRST) / len(plain)) for i in range(len(plain))]
        first_list += plain
        group += [(len(first_list) + i, P_CURATED_FIRST / len(curated)) for i in range(len(curated))]
        first_list += curated
        first_groups.append(group)
    last_list = list(LAST_CURATED) + sorted(lasts)
    esc = [s.replace('"', '""') for s in first_list]

    return _Model(
        noc_team=noc_team, noc_na_team=noc_na_team, noc_sampler=noc_sampler, n_regions_nocs=len(teams),
        absent_sampler=absent_sampler, games=games, games_na=games_na, games_sampler=games_sampler,
        games_next=games_next, games_year=np.array([int(r[0]) for r in hosts], dtype=np.int64),
        events=events, sport_sampler=sport_sampler, sport_season=sport_season,
        event_sampler=_Grouped(by_group), n_sports=len(sports), age_sampler=age_sampler,
        first_sampler=_Grouped(first_groups), first_names=np.array(esc, dtype=object),
        middle_names=np.array(["", *(" " + s for s in esc)], dtype=object),
        nicks=np.array(["", *(' ""' + n.replace('"', '""') + '""' for n in sorted(nick_set))], dtype=object),
        n_last_curated=len(LAST_CURATED),
        last_names=np.array([" " + s.replace('"', '""') for s in last_list], dtype=object),
        maidens=np.array(["", *(" (-" + s.replace('"', '""') + ")" for s in last_list)], dtype=object),
        height_mean=(hm[0][0], hm[1][0]), height_sd=(hm[0][1], hm[1][1]),
        bmi_mean=(bm[0][0], bm[1][0]), bmi_sd=(bm[0][1], bm[1][1]),
        edge_names=np.array([q(n) for n in EDGE_NAMES], dtype=object),
        edge_absent=np.array([q(t) + "," + q(n) for n, t in EDGE_ABSENT_NOCS], dtype=object),
        p_female=sum(r[col["Sex"]] == "F" for r in sample) / max(1, len(sample)),
    )


# Vocabularies of formatted numbers (index 0 is NA).
def _vocab(values: list[str]) -> Any:
    import numpy as np

    return np.array([NA, *values], dtype=object)


class _Stream:
    """Produces the athlete rows block by block; carries the current athlete across blocks."""

    # Rows of the per-block uniform matrix.
    U_NEW, U_SEX, U_NOC, U_ABSENT, U_ABSENT_NOC, U_SPORT, U_FIRST, U_MID, U_MID_PICK, U_NICK, U_NICK_PICK = range(11)
    U_LAST_SRC, U_LAST, U_SUFFIX, U_MAIDEN, U_MAIDEN_PICK, U_H_NA, U_W_NA, U_AGE, U_AGE_NA = range(11, 20)
    U_HALF, U_GAMES, U_EVENT, U_MEDAL, U_TEAM, U_STYLE, U_EDGE, U_EDGE_PICK, U_EDGE_SEX = range(20, 29)
    U_HEIGHT = 29  # 4 rows
    U_BMI = 33  # 4 rows
    N_UNIFORMS = 37

    def __init__(self, model: _Model, seed: int, edge_cases: bool) -> None:
        self.m = model
        self.seed = seed
        self.edge_cases = edge_cases
        self.carry: dict[str, Any] | None = None
        self.last_id = 0
        self.edge_counts = dict.fromkeys(EDGE_KINDS, 0)
        self.age_vocab = _vocab([str(a) for a in range(10, 71)])  # index = age - 9
        self.height_vocab = _vocab([str(h) for h in range(130, 221)])  # index = height - 129
        self.weight_vocab = _vocab([str(w // 2) if w % 2 == 0 else f"{w // 2}.5" for w in range(60, 361)])  # 2w - 59
        self.medal_vocab = _vocab([q(medal) for medal in MEDALS])
        self.sex_tail = (',"M"', ',"F"')

    def block(self, index: int, n: int) -> list[str]:  # noqa: C901 - one straight pipeline
        import numpy as np

        m = self.m
        rng = np.random.default_rng([self.seed, index])
        u = rng.random((self.N_UNIFORMS, BLOCK_ROWS))  # always a full block: prefixes stay stable
        pos = np.arange(BLOCK_ROWS)

        # Athlete-level attributes, drawn at every position, used where an athlete starts.
        new = u[self.U_NEW] < P_NEW_ATHLETE
        if index == 0:
            new[0] = True
        sex = (u[self.U_SEX] < m.p_female).astype(np.int64)
        zero = np.zeros(BLOCK_ROWS, dtype=np.int64)
        noc = m.noc_sampler.sample(zero, u[self.U_NOC])
        absent = u[self.U_ABSENT] < P_ABSENT_NOC
        noc = np.where(absent, m.absent_sampler.sample(zero, u[self.U_ABSENT_NOC]), noc)
        sport = m.sport_sampler.sample(sex, u[self.U_SPORT])

        first = m.first_sampler.sample(sex, u[self.U_FIRST])
        mid = np.where(u[self.U_MID] < P_MIDDLE, m.first_sampler.sample(sex, u[self.U_MID_PICK]) + 1, 0)
        n_nicks = len(m.nicks) - 1
        nick = np.where(u[self.U_NICK] < P_NICK, 1 + np.minimum((u[self.U_NICK_PICK] * n_nicks).astype(np.int64),
                                                                n_nicks - 1), 0)
        n_cur, n_all = m.n_last_curated, len(m.last_names)
        src_cur = u[self.U_LAST_SRC] < P_CURATED_LAST
        last = np.where(src_cur, (u[self.U_LAST] * n_cur).astype(np.int64),
                        n_cur + (u[self.U_LAST] * (n_all - n_cur)).astype(np.int64))
        last = np.minimum(last, n_all - 1)
        suffix_u = u[self.U_SUFFIX] / P_SUFFIX
        suffix = np.where(suffix_u < 1.0, 1 + np.searchsorted(np.array(SUFFIX_CUTS), suffix_u, side="right"), 0)
        suffix_vocab = np.array(["", *SUFFIXES, SUFFIXES[-1]], dtype=object)
        maiden = np.where((sex == 1) & (u[self.U_MAIDEN] < P_MAIDEN),
                          1 + np.minimum((u[self.U_MAIDEN_PICK] * n_all).astype(np.int64), n_all - 1), 0)
        name = ('"' + m.first_names[first] + m.middle_names[mid] + m.nicks[nick] + m.last_names[last]
                + suffix_vocab[suffix] + m.maidens[maiden] + '"')
        name_sex = name + np.array(self.sex_tail, dtype=object)[sex]

        hm, hs = np.array(m.height_mean)[sex], np.array(m.height_sd)[sex]
        height = np.clip(np.rint(hm + hs * _normal(u[self.U_HEIGHT:self.U_HEIGHT + 4])), 130, 220).astype(np.int64)
        bm, bs = np.array(m.bmi_mean)[sex], np.array(m.bmi_sd)[sex]
        bmi = bm + bs * _normal(u[self.U_BMI:self.U_BMI + 4])
        half = u[self.U_HALF] < P_HALF_KG
        w2 = np.where(half, 2 * np.floor(bmi * (height / 100.0) ** 2) + 1, 2 * np.rint(bmi * (height / 100.0) ** 2))
        w2 = np.clip(w2, 60, 360).astype(np.int64)
        h_na = u[self.U_H_NA] < P_HEIGHT_NA
        w_na = np.where(h_na, u[self.U_W_NA] < P_WEIGHT_NA_GIVEN_HEIGHT_NA, u[self.U_W_NA] < P_WEIGHT_NA_ALONE)
        height_i = np.where(h_na, 0, height - 129)
        weight_i = np.where(w_na, 0, w2 - 59)
        age_base = m.age_sampler.sample(zero, u[self.U_AGE])  # age at the athlete's first Games
        games0 = m.games_sampler.sample(m.sport_season[sport], u[self.U_GAMES])
        group = sex * m.n_sports + sport
        event0 = m.event_sampler.sample_pos(group, u[self.U_EVENT]) - m.event_sampler.starts[group]
        multi_event = u[self.U_STYLE] < P_MULTI_EVENT
        age_na = u[self.U_AGE_NA] < P_AGE_NA

        athlete = {"sex": sex, "noc": noc, "sport": sport, "name_sex": name_sex, "height_i": height_i,
                   "weight_i": weight_i, "age_base": age_base, "age_na": age_na, "games0": games0,
                   "event0": event0, "multi_event": multi_event,
                   "id": self.last_id + np.cumsum(new)}
        # Row -> index of its athlete's start (-1: continues the previous block's last athlete).
        start = np.maximum.accumulate(np.where(new, pos, -1)) + 1
        carry = self.carry or {k: v[:1] for k, v in athlete.items()} | {"row": np.zeros(1, dtype=np.int64)}
        a = {k: np.concatenate([carry[k], v])[start] for k, v in athlete.items()}
        a["id"] = np.where(start == 0, carry["id"][0], a["id"])
        # Row number within the athlete: distinct (Games, Event) pairs for up to CAREER_GAMES x events rows.
        a["row"] = np.where(start == 0, carry["row"][0] + 1 + pos, pos - (start - 1))
        self.carry = {k: v[n - 1:n] for k, v in a.items()}
        self.last_id = int(a["id"][n - 1])

        # Row-level values.
        # An athlete's rows are at their first Games or one of the next two of the same season.
        group = a["sex"] * m.n_sports + a["sport"]
        n_events = m.event_sampler.ends[group] - m.event_sampler.starts[group]
        row = a["row"]
        step = np.where(a["multi_event"], row // n_events, row % CAREER_GAMES) % CAREER_GAMES
        offset = np.where(a["multi_event"], row, row // CAREER_GAMES)
        event = m.event_sampler.values[m.event_sampler.starts[group] + (a["event0"] + offset) % n_events]
        games = m.games_next[step, a["games0"]]
        mu = u[self.U_MEDAL]
        medal = np.where(mu < P_MEDAL_NA, 0,
                         1 + np.minimum(((mu - P_MEDAL_NA) / (1 - P_MEDAL_NA) * 3).astype(np.int64), 2))
        tu = u[self.U_TEAM]
        variant = np.where(tu < P_TEAM_SUFFIX, 1 + np.minimum((tu / P_TEAM_SUFFIX * 3).astype(np.int64), 2), 0)
        age = np.clip(a["age_base"] + m.games_year[games] - m.games_year[m.games_next[0, a["games0"]]], 10, 70)
        age_i = np.where(a["age_na"], 0, age - 9)

        cols = {
            "id": [f'"{i}"' for i in a["id"][:n].tolist()],
            "name_sex": a["name_sex"],
            "age": self.age_vocab[age_i],
            "height": self.height_vocab[a["height_i"]],
            "weight": self.weight_vocab[a["weight_i"]],
            "team_noc": m.noc_team[a["noc"] * 4 + variant],
            "games": m.games[games],
            "event": m.events[event],
            "medal": self.medal_vocab[medal],
        }
        cols = {k: (v if isinstance(v, list) else v[:n].tolist()) for k, v in cols.items()}
        dups = self._edge(u, n, cols, a, games) if self.edge_cases else []
        lines = list(map(",".join, zip(*cols.values(), strict=True)))
        for i in dups:
            lines[i] = lines[i - 1]
        return lines

    def _edge(self, u: Any, n: int, cols: dict[str, list[str]], a: dict[str, Any], games: Any) -> list[int]:
        """Overwrite ~1.2 % of rows with valid-but-nasty variants; return the rows to duplicate."""
        import numpy as np

        m = self.m
        kind = np.searchsorted(np.array(EDGE_CUTS), u[self.U_EDGE][:n], side="right")
        pick = u[self.U_EDGE_PICK][:n]
        dups = []
        for i in np.flatnonzero(kind < len(EDGE_KINDS)).tolist():
            k = EDGE_KINDS[kind[i]]
            if k == "all_na":
                cols["name_sex"][i] = "NA,NA"
                cols["age"][i] = cols["height"][i] = cols["weight"][i] = cols["medal"][i] = NA
                cols["team_noc"][i] = m.noc_na_team[a["noc"][i]]
                cols["games"][i] = m.games_na[games[i]]
                cols["event"][i] = "NA,NA"
            elif k == "absent_noc":
                cols["team_noc"][i] = m.edge_absent[int(pick[i] * len(m.edge_absent))]
            elif k == "duplicate":
                if i == 0:
                    continue  # the previous line is in another block: keep the row as it is
                dups.append(i)
            elif k == "nasty_name":
                sex = self.sex_tail[int(u[self.U_EDGE_SEX][i] < 0.5)]
                cols["name_sex"][i] = m.edge_names[int(pick[i] * len(m.edge_names))] + sex
            else:  # values exactly at the generator's bounds
                low = pick[i] < 0.5
                cols["age"][i] = "10" if low else "70"
                cols["height"][i] = "130" if low else "220"
                cols["weight"][i] = "30" if low else "180.0" if pick[i] > 0.75 else "180"
            self.edge_counts[k] += 1
        return dups


def _layout(out_path: Path, files: int) -> tuple[Path, list[Path], Path, bool]:
    """Return (athletes path: file or parts folder, part files, output dir, directory mode)."""
    if out_path.suffix.lower() == ".csv":
        target = out_path if files == 1 else out_path.with_suffix("")
        return target, [target] if files == 1 else _parts(target, files), out_path.parent, False
    target = out_path / (ATHLETES_FILE if files == 1 else PART_DIR)
    return target, [target] if files == 1 else _parts(target, files), out_path, True


def _parts(folder: Path, files: int) -> list[Path]:
    return [folder / PART_NAME.format(i) for i in range(files)]


def _remove_stale(target: Path, out_dir: Path, dir_mode: bool) -> None:
    """Remove earlier outputs of this generator that would make the input set inconsistent."""
    folders = [target] if target.suffix != ".csv" else []
    if dir_mode:
        folders.append(out_dir / PART_DIR)
        if target.suffix != ".csv" and (out_dir / ATHLETES_FILE).is_file():
            (out_dir / ATHLETES_FILE).unlink()
    for folder in folders:
        if folder.is_dir():
            for old in folder.glob("athlete_events_part-*.csv"):
                old.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()


def _line_blocks(stream: _Stream, rows: int):
    done, index = 0, 0
    while done < rows:
        n = min(BLOCK_ROWS, rows - done)
        yield stream.block(index, n)
        done += n
        index += 1


def _write_parts(paths: list[Path], counts: list[int], blocks, chunk_rows: int) -> int:
    header = ",".join(q(c) for c in COLUMNS) + EOL
    pending: list[str] = []
    total = 0
    for path, count in zip(paths, counts, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(header.encode("utf-8"))
                remaining = count
                buf: list[bytes] = []  # encoded pieces, written once chunk_rows rows are buffered
                buffered = 0
                while remaining:
                    if not pending:
                        pending = next(blocks)
                    take = pending if len(pending) <= remaining else pending[:remaining]
                    pending = [] if take is pending else pending[remaining:]
                    buf.append((EOL.join(take) + EOL).encode("utf-8"))
                    buffered += len(take)
                    remaining -= len(take)
                    if buffered >= chunk_rows or not remaining:
                        f.writelines(buf)
                        buf, buffered = [], 0
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        total += path.stat().st_size
    return total


def default_data_dir() -> Path:
    """The Olympics sample files: ``olympics/`` under ``ETL_DATA_DIR`` (see include.etl.settings)."""
    from include.etl.settings import Settings

    return Settings.from_env().data_dir / SUBDIR


def generate_athletes(
    out_path: str | os.PathLike,
    rows: int,
    seed: int = 0,
    chunk_rows: int = 100_000,
    data_dir: str | os.PathLike | None = None,
    files: int = 1,
    edge_cases: bool = False,
    copy_reference: bool | None = None,
) -> dict:
    """Write ``rows`` athlete rows in the real ``athlete_events.csv`` format; return a summary.

    ``out_path`` ending in ``.csv`` is the file itself (``files > 1``: a folder of that name
    without ``.csv`` holding ``athlete_events_part-00000.csv`` ...); anything else is an output
    directory receiving ``athlete_events.csv`` (or the ``athlete_events/`` parts folder) and, by
    default (``copy_reference=None``), copies of ``noc_regions.csv`` and
    ``host_city_locations.csv`` from ``data_dir``, making it a complete input set. Rows are split
    across parts as evenly as possible, each part with its own header. Files are written under a
    temporary name and renamed when complete.

    ``chunk_rows`` bounds how many formatted rows are buffered before a write; the random stream
    does not depend on it (nor on ``files``). Returns ``rows``, ``files`` (paths written),
    ``bytes`` (of the athletes files), ``seconds``, ``seed``, ``athletes_path``,
    ``regions_path``/``venues_path`` (copies, or ``None``) and ``edge_rows`` (count per kind).
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ValueError(f"rows must be a non-negative integer, got {rows!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if files < 1 or (rows and files > rows):
        raise ValueError(f"files must be between 1 and rows ({rows}), got {files}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    started = time.perf_counter()
    data_dir, out_path = Path(data_dir) if data_dir is not None else default_data_dir(), Path(out_path)
    stream = _Stream(_load_model(data_dir), seed, edge_cases)

    target, paths, out_dir, dir_mode = _layout(out_path, files)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(target, out_dir, dir_mode)
    counts = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    nbytes = _write_parts(paths, counts, _line_blocks(stream, rows), chunk_rows)

    copies: dict[str, str | None] = {"regions_path": None, "venues_path": None}
    if copy_reference if copy_reference is not None else dir_mode:
        for key, name in zip(copies, REFERENCE_FILES, strict=True):
            dest = out_dir / name
            if dest.resolve() != (data_dir / name).resolve():
                shutil.copyfile(data_dir / name, dest)
            copies[key] = str(dest)
    return {
        "rows": rows,
        "files": [str(p) for p in paths],
        "bytes": nbytes,
        "seconds": round(time.perf_counter() - started, 3),
        "seed": seed,
        "athletes_path": str(target),
        **copies,
        "edge_rows": dict(stream.edge_counts) if edge_cases else {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.pipelines.olympics.generate",
        description="Generate the Olympics athlete_events.csv format at any size (deterministic, streaming).",
    )
    parser.add_argument("--rows", type=int, required=True, help="number of athlete rows")
    parser.add_argument("--out", required=True,
                        help="output directory (complete input set) or a path ending in .csv (the athletes file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", type=int, default=1, help="split the rows across K part files")
    parser.add_argument("--edge-cases", action="store_true", help="mix in valid but nasty rows")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows buffered per write")
    parser.add_argument("--data-dir", default=None,
                        help=f"reference data (default: $ETL_DATA_DIR/olympics, here {default_data_dir()})")
    parser.add_argument("--copy-reference", action=argparse.BooleanOptionalAction, default=None,
                        help="copy noc_regions.csv and host_city_locations.csv beside the output "
                             "(default: yes when --out is a directory)")
    args = parser.parse_args(argv)
    try:
        s = generate_athletes(args.out, args.rows, seed=args.seed, chunk_rows=args.chunk_rows,
                              data_dir=args.data_dir, files=args.files, edge_cases=args.edge_cases,
                              copy_reference=args.copy_reference)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    secs = max(s["seconds"], 1e-9)
    print(f"rows={s['rows']} files={len(s['files'])} bytes={s['bytes']} seconds={s['seconds']:.3f} "
          f"rows_per_s={s['rows'] / secs:.0f} mb_per_s={s['bytes'] / 1e6 / secs:.1f} out={s['athletes_path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
