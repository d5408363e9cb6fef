"""The movies transforms and checks on tiny pandas frames with Arrow dtypes (as the engines read
the ingested tables), and the contracts on the data set's quirks."""

from __future__ import annotations

import datetime as dt

import narwhals as nw
import pandas as pd
import pyarrow as pa
import pytest

from include.pipelines.movies.quality import Source, check_marts
from include.pipelines.movies.transforms import M, keyword_ratings, movie_ratings, ratings_by_year
from tests.include.test_reader import read, rejects, write

UTC = dt.UTC


def lazy(table: pa.Table) -> nw.LazyFrame:
    return nw.from_native(table.to_pandas(types_mapper=pd.ArrowDtype)).lazy()


def collect(frame: nw.LazyFrame, key: str) -> list[dict]:
    return pa.Table.from_pandas(frame.collect().to_native(), preserve_index=False).sort_by(key).to_pylist()


def at(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


RATINGS = pa.table({
    "user_id": pa.array([1, 1, 2, 2, 3], pa.int64()),
    "movie_id": pa.array([10, 20, 10, 30, 10], pa.int64()),
    "rating": pa.array([4.0, 2.0, 5.0, 3.0, 3.0]),
    "rated_at": pa.array([at(1999, 12, 31, 23, 30), at(2000, 1, 1), at(2000, 6, 1), at(2001, 1, 1), at(2000, 2, 1)],
                         pa.timestamp("us", tz="UTC")),
})
LINKS = pa.table({
    "movie_id": pa.array([10, 20, 40], pa.int64()),
    "imdb_id": pa.array(["0114709", "0000001", "0000002"]),
    "tmdb_id": pa.array([862, None, 862], pa.int64()),  # movie 30 has no link, 20 no TMDB id
})
KEYWORDS = pa.table({  # exploded: one row per keyword; 862 lists 'toy' twice
    "tmdb_id": pa.array([862, 862, 862, 999], pa.int64()),
    "keywords_id": pa.array([1, 2, 1, 3], pa.int64()),
    "keywords_name": pa.array(["toy", "boy", "toy", "unrated"]),
})


def test_movie_ratings_weights_each_movie_towards_the_mean_of_all_ratings():
    c = 17.0 / 5
    rows = collect(movie_ratings(lazy(RATINGS), lazy(LINKS), c), "movie_id")
    assert [r["movie_id"] for r in rows] == [10, 20, 30]
    first = rows[0]
    assert (first["imdb_id"], first["tmdb_id"], first["n_ratings"]) == ("tt0114709", 862, 3)
    assert first["mean_rating"] == pytest.approx(4.0)
    assert first["weighted_rating"] == pytest.approx((3 * 4.0 + M * c) / (3 + M))
    assert (first["first_rated"], first["last_rated"]) == (at(1999, 12, 31, 23, 30), at(2000, 6, 1))
    assert (rows[1]["imdb_id"], rows[1]["tmdb_id"]) == ("tt0000001", None)
    assert (rows[2]["imdb_id"], rows[2]["tmdb_id"]) == (None, None)


def test_keyword_ratings_count_distinct_rated_movies_and_their_ratings():
    rows = collect(keyword_ratings(lazy(RATINGS), lazy(LINKS), lazy(KEYWORDS)), "keyword_id")
    # Only movie 10 is rated and linked to TMDB 862 (40 shares the id but has no rating); 'toy' counts once.
    assert rows == [
        {"keyword_id": 1, "keyword": "toy", "n_movies": 1, "n_ratings": 3, "mean_rating": pytest.approx(4.0)},
        {"keyword_id": 2, "keyword": "boy", "n_movies": 1, "n_ratings": 3, "mean_rating": pytest.approx(4.0)},
    ]
    with_40 = pa.concat_tables([RATINGS, pa.table({"user_id": [9], "movie_id": [40], "rating": [1.0],
                                                   "rated_at": RATINGS["rated_at"][:1]}).cast(RATINGS.schema)])
    toy = collect(keyword_ratings(lazy(with_40), lazy(LINKS), lazy(KEYWORDS)), "keyword_id")[0]
    assert (toy["n_movies"], toy["n_ratings"], toy["mean_rating"]) == (2, 4, pytest.approx(13.0 / 4))


def test_ratings_by_year_uses_the_utc_year_and_counts_distinct_users():
    rows = collect(ratings_by_year(lazy(RATINGS)), "year")
    assert [(r["year"], r["n_ratings"], r["n_users"]) for r in rows] == [(1999, 1, 1), (2000, 3, 3), (2001, 1, 1)]
    assert rows[1]["mean_rating"] == pytest.approx(10.0 / 3)


def _marts():
    c = 17.0 / 5
    tables = {"movie_ratings": movie_ratings(lazy(RATINGS), lazy(LINKS), c),
              "keyword_ratings": keyword_ratings(lazy(RATINGS), lazy(LINKS), lazy(KEYWORDS)),
              "ratings_by_year": ratings_by_year(lazy(RATINGS))}
    return {k: v.collect().to_native().astype(object).where(lambda f: f.notna(), None) for k, v in tables.items()}, c


def test_checks_pass_on_correct_marts_and_find_each_problem():
    marts, c = _marts()
    assert check_marts(marts, Source(ratings=5, c=c)) == []
    assert check_marts(marts, Source(ratings=6, c=c)) == [
        "movie_ratings: counts 5 ratings, ratings has 6", "ratings_by_year: counts 5 ratings, ratings has 6"]
    broken = {k: v.copy() for k, v in marts.items()}
    broken["movie_ratings"].loc[0, "weighted_rating"] = 5.0
    broken["movie_ratings"].loc[1, "imdb_id"] = "tt12"
    broken["keyword_ratings"].loc[0, "n_movies"] = 0
    broken["ratings_by_year"].loc[0, "n_users"] = 2
    broken["ratings_by_year"].loc[1, "year"] = broken["ratings_by_year"].loc[0, "year"]
    assert check_marts(broken, Source(ratings=5, c=c)) == [
        f"movie_ratings: 1 weighted_rating not between mean_rating and C = {c:.4f}",
        "movie_ratings: 1 imdb_id not 'tt' + 7 digits",
        "keyword_ratings: n_movies outside [1, 3] (the rated movies)",
        "ratings_by_year: 1 duplicated year",
        "ratings_by_year: n_users outside [1, n_ratings]",
    ]


def test_contracts_read_the_quirks_of_the_files(tmp_path):
    from include.pipelines.movies.datasets import KEYWORDS as KW
    from include.pipelines.movies.datasets import LINKS as LN
    from include.pipelines.movies.datasets import RATINGS as RT

    links = read(write(tmp_path, "movieId,imdbId,tmdbId\r\n1,0114709,862\r\n2,0113497,\r\n3,114709,1\r\n", "l.csv"), LN)
    assert links.slice(0, 2).select(["movie_id", "imdb_id", "tmdb_id"]).to_pylist() == [
        {"movie_id": 1, "imdb_id": "0114709", "tmdb_id": 862}, {"movie_id": 2, "imdb_id": "0113497", "tmdb_id": None}]
    assert rejects(links) == [(4, "breaks rule: imdbId is 7 digits", "3,114709,1")]
    kw = '1,"[{\'id\': 15101, \'name\': ""children\'s book""}]"\n2,[]\n1,"[{\'id\': 15101, \'name\': ""children\'s book""}]"\n'
    keywords = read(write(tmp_path, "id,keywords\n" + kw + "3,[{'id': 1}\n", "k.csv"), KW)
    assert keywords["keywords"].to_pylist()[:2] == [[{"id": 15101, "name": "children's book"}], []]
    assert [(line, reason) for line, reason, _ in rejects(keywords)] == [
        (4, "(dropped: exact copy of an earlier row)"), (5, "keywords is not a Python literal")]
    ratings = read(write(tmp_path, "userId,movieId,rating,timestamp\n1,2,3.5,0\n1,2,4.0,1\n1,3,4.25,1\n1,4,0,1\n",
                         "r.csv"), RT)
    assert ratings["rated_at"].to_pylist()[0] == at(1970, 1, 1)
    assert [(line, reason) for line, reason, _ in rejects(ratings)] == [
        (3, "duplicate key (userId, movieId)"), (4, "breaks rule: rating is 0.5 to 5.0 in steps of 0.5"),
        (5, "breaks rule: rating is 0.5 to 5.0 in steps of 0.5")]
