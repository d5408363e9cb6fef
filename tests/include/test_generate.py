"""The athletes generator (include/pipelines/olympics/generate.py): format, determinism, realism, streaming."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from include.etl.reader import read_header
from include.pipelines.olympics.datasets import ATHLETES
from include.pipelines.olympics.generate import COLUMNS, EDGE_NAMES, generate_athletes
from tests.conftest import DATA, ROOT

# One athletes line, field by field, as the real file writes it: ID and text quoted (quotes
# doubled), numbers bare, a missing value a bare NA.
_Q = r'"(?:[^"]|"")*"'
_QNA = rf"(?:{_Q}|NA)"
_INT = r"(?:\d+|NA)"
_NUM = r"(?:\d+(?:\.\d)?|NA)"
LINE = re.compile(
    rf'^"\d+",{_QNA},(?:"M"|"F"|NA),{_INT},{_NUM},{_NUM},{_QNA},{_Q},{_QNA},\d{{4}},"(?:Summer|Winter)",'
    rf'{_QNA},{_QNA},{_QNA},(?:"Gold"|"Silver"|"Bronze"|NA)$'
)


def _frame(*paths: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths], ignore_index=True)


def _body(path: Path) -> bytes:
    return path.read_bytes().split(b"\r\n", 1)[1]


def _regions() -> set[str]:
    with open(DATA / "noc_regions.csv", newline="", encoding="utf-8") as f:
        return {r[0] for r in list(csv.reader(f))[1:] if r}


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """50,000 plain rows, shared by the rate and realism tests."""
    path = tmp_path_factory.mktemp("gen") / "athletes.csv"
    generate_athletes(path, 50_000, seed=11, chunk_rows=7_000)
    return path, _frame(path)


@pytest.fixture(scope="module")
def edgy(tmp_path_factory) -> tuple[dict, pd.DataFrame]:
    """20,000 rows with the nasty-but-valid mix, as a 3-part landing zone in an output directory."""
    out = tmp_path_factory.mktemp("edgy") / "landing"
    summary = generate_athletes(out, 20_000, seed=5, files=3, edge_cases=True)
    return summary, _frame(*map(Path, summary["files"]))


def test_format_matches_the_real_file_byte_for_byte(tmp_path):
    path = tmp_path / "a.csv"
    generate_athletes(path, 3_000, seed=1)
    data = path.read_bytes()
    real = (DATA / "athlete_events_head.csv").read_bytes()
    assert data.split(b"\r\n", 1)[0] == real.split(b"\r\n", 1)[0] == (
        b'"ID","Name","Sex","Age","Height","Weight","Team","NOC","Games","Year","Season","City","Sport","Event","Medal"'
    )
    assert not data.startswith(b"\xef\xbb\xbf") and data.endswith(b"\r\n")
    # CRLF everywhere, no bare CR or LF (no newline inside a field either).
    assert data.count(b"\r\n") == data.count(b"\n") == data.count(b"\r") == 3_001
    assert b'"NA"' not in data  # a missing value is never quoted
    text = data.decode("utf-8")
    lines = text.split("\r\n")[1:-1]
    assert len(lines) == 3_000
    bad = [line for line in lines if not LINE.match(line)]
    assert not bad, bad[:3]
    # The same pattern accepts the real sample: it describes the real format, not just ours.
    real_lines = real.decode("utf-8").split("\r\n")[1:-1]
    assert [line for line in real_lines if not LINE.match(line)] == []
    # Numbers bare, strings quoted, NA tokens where missing, in the same row.
    assert any(re.search(r',NA,NA,"[^"]', line) for line in lines)  # Height and Weight missing
    assert any(line.endswith(',"Gold"') for line in lines) and any(line.endswith(",NA") for line in lines)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c, d = (tmp_path / f"{x}.csv" for x in "abcd")
    generate_athletes(a, 9_000, seed=3)
    generate_athletes(b, 9_000, seed=3, chunk_rows=1_234)  # buffering does not change the stream
    generate_athletes(c, 9_000, seed=4)
    generate_athletes(d, 5_000, seed=3)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert _body(a).startswith(_body(d))  # a smaller run is a prefix of a bigger one


def test_row_counts_are_exact_with_one_and_three_files(tmp_path):
    one = generate_athletes(tmp_path / "one.csv", 12_345, seed=2)
    assert one["rows"] == 12_345 and len(one["files"]) == 1
    assert Path(one["files"][0]).read_bytes().count(b"\r\n") == 12_346
    assert one["bytes"] == Path(one["files"][0]).stat().st_size

    three = generate_athletes(tmp_path / "split.csv", 12_345, seed=2, files=3, chunk_rows=1_000)
    parts = [Path(p) for p in three["files"]]
    assert [p.name for p in parts] == [f"athlete_events_part-{i:05d}.csv" for i in range(3)]
    assert all(p.parent == tmp_path / "split" for p in parts)
    counts = [p.read_bytes().count(b"\r\n") - 1 for p in parts]
    assert counts == [4_115, 4_115, 4_115] and sum(counts) == three["rows"] == 12_345
    assert three["bytes"] == sum(p.stat().st_size for p in parts)
    for p in parts:  # each part has its own header
        assert read_header(str(p), ATHLETES).names == list(COLUMNS)
    # The split does not change the rows: the parts are the single file cut in three.
    assert b"".join(_body(p) for p in parts) == _body(Path(one["files"][0]))


def test_missing_value_rates_are_close_to_the_real_file(big):
    _, df = big
    rate = {c: (df[c] == "NA").mean() for c in ("Age", "Height", "Weight", "Medal")}
    assert 0.025 <= rate["Age"] <= 0.045, rate
    assert 0.19 <= rate["Height"] <= 0.25 and 0.19 <= rate["Weight"] <= 0.25, rate
    assert 0.82 <= rate["Medal"] <= 0.88, rate
    assert set(df["Medal"]) == {"NA", "Gold", "Silver", "Bronze"}
    for medal in ("Gold", "Silver", "Bronze"):
        assert 0.035 <= (df["Medal"] == medal).mean() <= 0.065


def test_values_are_realistic(big):
    _, df = big
    assert set(df["Sex"]) == {"M", "F"}
    age = df.loc[df["Age"] != "NA", "Age"]
    assert age.str.fullmatch(r"\d+").all() and age.astype(int).between(10, 70).all()
    height = df.loc[df["Height"] != "NA", "Height"].astype(float)
    weight = df.loc[df["Weight"] != "NA", "Weight"]
    assert height.between(130, 220).all() and weight.astype(float).between(30, 180).all()
    assert weight.str.fullmatch(r"\d+(\.\d)?").all() and weight.str.contains(r"\.").any()
    # Games, Year, Season, City come together from one venue row.
    venues = pd.read_csv(DATA / "host_city_locations.csv", dtype=str)
    known = set(zip(venues["Year"], venues["Season"], venues["City"], strict=True))
    assert set(zip(df["Year"], df["Season"], df["City"], strict=True)) <= known
    assert (df["Games"] == df["Year"] + " " + df["Season"]).all()
    # Sport and Event from the real sample; the event belongs to the sport.
    sample = _frame(DATA / "athlete_events_head.csv")
    assert set(zip(df["Sport"], df["Event"], strict=True)) <= set(zip(sample["Sport"], sample["Event"], strict=True))
    assert not df.loc[df["Sex"] == "M", "Event"].str.contains("Women's").any()
    # IDs increase; athletes repeat over consecutive rows, with the same name.
    ids = df["ID"].astype(int)
    assert ids.is_monotonic_increasing and ids.iloc[0] == 1
    assert 1.5 <= len(df) / ids.nunique() <= 2.2
    assert (df.groupby("ID")["Name"].nunique() == 1).all()
    # Team near the region names: the most common teams are region names.
    regions = pd.read_csv(DATA / "noc_regions.csv", dtype=str, keep_default_na=False, lineterminator="\r")
    top = df["Team"].value_counts().head(20).index
    assert set(top) <= set(regions["region"]) | set(regions["notes"])
    assert df["Team"].str.fullmatch(r".+-[123]").any()  # "Japan-1" style teams, as in the real file


def test_nocs_absent_from_regions_appear_at_about_one_percent(big):
    _, df = big
    absent = df.loc[~df["NOC"].isin(_regions()), "NOC"]
    assert 0.005 <= len(absent) / len(df) <= 0.015
    assert "SGP" in set(absent)
    assert (df.loc[df["NOC"] == "SGP", "Team"].str.replace(r"-\d$", "", regex=True) == "Singapore").all()


def test_names_with_quotes_commas_apostrophes_and_non_ascii_round_trip(big):
    path, df = big
    names = df["Name"]
    assert names.str.contains('"').any() and names.str.contains(",").any() and names.str.contains("'").any()
    assert names.map(lambda s: not s.isascii()).any()
    assert names.str.contains(r'"[^"]+"').any()  # nicknames, as 'Cornelia "Cor" Aalten'
    # Python's csv module reads the same rows as pandas and writes them back identically.
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(COLUMNS) and len(rows) == len(df) + 1
    assert [r[1] for r in rows[1:]] == names.tolist()
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    assert list(csv.reader(io.StringIO(buf.getvalue(), newline=""))) == rows


def _parse_whole(path: Path) -> pd.DataFrame:
    """The platform reader over the whole file as one block (what an engine runs per block)."""
    from include.etl.csvfile import Block
    from include.etl.reader import parse_block, to_pandas

    header = read_header(str(path), ATHLETES)
    block = Block(header.data_offset, header.size - header.data_offset, header.first_line)
    return to_pandas(parse_block(str(path), block, header, ATHLETES))


def test_every_row_parses_with_zero_rejects(big, edgy):
    for paths, df in (([big[0]], big[1]), ([Path(p) for p in edgy[0]["files"]], edgy[1])):
        out = pd.concat([_parse_whole(p) for p in paths], ignore_index=True)
        assert len(out) == len(df)
        assert out["_reason"].isna().all(), out.loc[out["_reason"].notna(), "_reason"].value_counts().head()
        assert out["ID"].notna().all() and out["NOC"].notna().all() and out["Year"].notna().all()


def test_edge_cases_are_nasty_but_valid(edgy):
    summary, df = edgy
    assert len(df) == summary["rows"] == 20_000
    assert all(n > 0 for n in summary["edge_rows"].values()), summary["edge_rows"]
    optional = [c for c in COLUMNS if c not in ATHLETES.required]
    all_na = (df[optional] == "NA").all(axis=1)
    assert all_na.sum() >= summary["edge_rows"]["all_na"]
    assert df.duplicated().sum() >= summary["edge_rows"]["duplicate"]
    assert set(df["NOC"]) - _regions() >= {"SGP"} and len(set(df["NOC"]) - _regions()) >= 4
    names = set(df["Name"])
    assert set(EDGE_NAMES) <= names  # every nasty name survived quoting exactly
    assert {"Zoë O'Brien, Jr.", 'Jean-Pierre "JP" Müller', "Søren Ødegaard", "José Martínez"} <= names
    lines = b"".join(_body(Path(p)) for p in summary["files"]).decode("utf-8").split("\r\n")[:-1]
    assert all(LINE.match(line) for line in lines)
    assert max(Counter(lines).values()) >= 2  # exact duplicate lines


def test_output_directory_is_a_complete_input_set(tmp_path):
    out = tmp_path / "landing"
    single = generate_athletes(out, 1_000, seed=9)
    assert single["athletes_path"] == str(out / "athlete_events.csv")
    for name, key in (("noc_regions.csv", "regions_path"), ("host_city_locations.csv", "venues_path")):
        assert (out / name).read_bytes() == (DATA / name).read_bytes()  # byte-for-byte (bare CR kept)
        assert single[key] == str(out / name)
    # Regenerating as parts replaces the single file; fewer parts later leave no stale part behind.
    generate_athletes(out, 1_000, seed=9, files=4)
    assert not (out / "athlete_events.csv").exists()
    assert len(list((out / "athlete_events").glob("*.csv"))) == 4
    generate_athletes(out, 1_000, seed=9, files=2)
    assert sorted(p.name for p in (out / "athlete_events").iterdir()) == [
        "athlete_events_part-00000.csv", "athlete_events_part-00001.csv"]
    assert sorted(p.name for p in out.iterdir()) == ["athlete_events", "host_city_locations.csv", "noc_regions.csv"]
    # A .csv path is just the file, without copies unless asked.
    plain = generate_athletes(tmp_path / "x" / "a.csv", 10)
    assert plain["regions_path"] is None and sorted(p.name for p in (tmp_path / "x").iterdir()) == ["a.csv"]


def test_bad_arguments_are_refused(tmp_path):
    for kwargs in ({"rows": -1}, {"rows": 5, "files": 6}, {"rows": 5, "seed": -1}, {"rows": 5, "chunk_rows": 0}):
        with pytest.raises(ValueError):
            generate_athletes(tmp_path / "a.csv", **kwargs)
    with pytest.raises(FileNotFoundError):
        generate_athletes(tmp_path / "a.csv", 5, data_dir=tmp_path / "nowhere")


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_prints_one_summary_line_and_module_import_is_light(tmp_path):
    out = tmp_path / "cli"
    run = _python("-m", "include.pipelines.olympics.generate", "--rows", "2000", "--out", str(out), "--seed", "3",
                  "--files", "2", "--edge-cases")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and re.search(r"rows=2000 .*bytes=\d+ seconds=[\d.]+", lines[0]), lines
    assert sorted(p.name for p in out.iterdir()) == ["athlete_events", "host_city_locations.csv", "noc_regions.csv"]
    bad = _python("-m", "include.pipelines.olympics.generate", "--rows", "-5", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "rows" in bad.stderr
    light = _python("-c", "import sys, include.pipelines.olympics.generate; sys.exit('numpy' in sys.modules)")
    assert light.returncode == 0, "numpy must be imported inside functions only"


_PEAK = """
import resource, sys
from include.pipelines.olympics.generate import generate_athletes
generate_athletes(sys.argv[1], int(sys.argv[2]), chunk_rows=20_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def test_memory_stays_flat_when_rows_grow(tmp_path):
    peaks = {}
    for rows in (20_000, 400_000):
        run = _python("-c", _PEAK, str(tmp_path / f"{rows}.csv"), str(rows))
        assert run.returncode == 0, run.stderr
        peaks[rows] = int(run.stdout.strip()) / 1024
    # 20x the rows: peak RSS grows by much less than the ~60 MB the 400,000 rows take on disk.
    assert (tmp_path / "400000.csv").stat().st_size > 50 * 2**20
    assert peaks[400_000] - peaks[20_000] < 150, peaks
