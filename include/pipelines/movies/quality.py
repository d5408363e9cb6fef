"""The movies marts' quality checks, run on the staged marts before they are published.

A failed check blocks publishing (the platform's quality gate raises
:class:`~include.etl.errors.QualityCheckFailed`): the previous partitions stay as they were.
The marts are small (thousands of rows), so the checks run on pandas frames, the same whichever
engine computed them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.pipelines.movies.transforms import KEYWORD_COLUMNS, MOVIE_COLUMNS, YEAR_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

TOLERANCE = 1e-9


@dataclass(frozen=True)
class Source:
    """What the marts were computed from: the accepted ratings' count and mean (``c``)."""

    ratings: int
    c: float


def _frame(name: str, frame: pd.DataFrame, columns: tuple[str, ...], key: str) -> list[str]:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        return [f"{name}: missing columns {missing}"]
    problems = []
    if frame.empty:
        problems.append(f"{name}: no rows")
    if frame[key].isna().any():
        problems.append(f"{name}: {int(frame[key].isna().sum())} null {key}")
    dups = int(frame[key].duplicated().sum())
    if dups:
        problems.append(f"{name}: {dups} duplicated {key}")
    outside = int(((frame["mean_rating"] < 0.5 - TOLERANCE) | (frame["mean_rating"] > 5 + TOLERANCE)).sum())
    if outside:
        problems.append(f"{name}: {outside} mean_rating outside [0.5, 5]")
    if (frame["n_ratings"] < 1).any():
        problems.append(f"{name}: {int((frame['n_ratings'] < 1).sum())} rows with n_ratings < 1")
    return problems


def check_movies(movies: pd.DataFrame, source: Source) -> list[str]:
    """``movie_ratings``: one row per movie, every accepted rating counted once, ``weighted_rating``
    between the movie's mean and ``c``, ``first_rated <= last_rated``, ``imdb_id`` ``tt`` + 7 digits."""
    problems = _frame("movie_ratings", movies, MOVIE_COLUMNS, "movie_id")
    if problems and problems[0].startswith("movie_ratings: missing"):
        return problems
    counted = int(movies["n_ratings"].sum())
    if counted != source.ratings:
        problems.append(f"movie_ratings: counts {counted} ratings, ratings has {source.ratings}")
    low = movies["mean_rating"].clip(upper=source.c) - TOLERANCE
    high = movies["mean_rating"].clip(lower=source.c) + TOLERANCE
    between = int(((movies["weighted_rating"] < low) | (movies["weighted_rating"] > high)).sum())
    if between:
        problems.append(f"movie_ratings: {between} weighted_rating not between mean_rating and C = {source.c:.4f}")
    if (movies["first_rated"] > movies["last_rated"]).any():
        problems.append("movie_ratings: first_rated after last_rated")
    imdb = movies["imdb_id"].dropna()
    bad = int((~imdb.astype(str).str.fullmatch(r"tt[0-9]{7}")).sum())
    if bad:
        problems.append(f"movie_ratings: {bad} imdb_id not 'tt' + 7 digits")
    return problems


def check_keywords(keywords: pd.DataFrame, movies: pd.DataFrame) -> list[str]:
    """``keyword_ratings``: one row per keyword, ``1 <= n_movies <=`` rated movies, ``n_ratings >= n_movies``."""
    problems = _frame("keyword_ratings", keywords, KEYWORD_COLUMNS, "keyword_id")
    if problems and problems[0].startswith("keyword_ratings: missing"):
        return problems
    if ((keywords["n_movies"] < 1) | (keywords["n_movies"] > len(movies))).any():
        problems.append(f"keyword_ratings: n_movies outside [1, {len(movies)}] (the rated movies)")
    if (keywords["n_ratings"] < keywords["n_movies"]).any():
        problems.append("keyword_ratings: fewer ratings than movies")
    return problems


def check_years(years: pd.DataFrame, source: Source) -> list[str]:
    """``ratings_by_year``: one row per year, every accepted rating counted once, ``1 <= n_users <= n_ratings``."""
    problems = _frame("ratings_by_year", years, YEAR_COLUMNS, "year")
    if problems and problems[0].startswith("ratings_by_year: missing"):
        return problems
    counted = int(years["n_ratings"].sum())
    if counted != source.ratings:
        problems.append(f"ratings_by_year: counts {counted} ratings, ratings has {source.ratings}")
    if ((years["n_users"] < 1) | (years["n_users"] > years["n_ratings"])).any():
        problems.append("ratings_by_year: n_users outside [1, n_ratings]")
    return problems


def check_marts(tables: Mapping[str, pd.DataFrame], source: Source) -> list[str]:
    """Every problem found in the three staged marts (empty list: publishable)."""
    movies = tables["movie_ratings"]
    return (check_movies(movies, source) + check_keywords(tables["keyword_ratings"], movies)
            + check_years(tables["ratings_by_year"], source))
