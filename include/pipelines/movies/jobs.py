"""The movies job: ``movies.marts``.

``movies.ingest`` is the platform's generic ingest over :mod:`.datasets`, registered with the
pipeline (``include/pipelines/movies/__init__.py``). Transforms and checks are imported inside
the job: DAG parsing imports this module and must stay light.
"""

from __future__ import annotations

from typing import Any

from include.etl.jobs import JobContext, job, steps

MARTS = ("movie_ratings", "keyword_ratings", "ratings_by_year")


def _source(ctx: JobContext) -> Any:
    """The run's accepted ratings: their count (from the Delta log) and mean ``c`` (one column, read here)."""
    import pyarrow.compute as pc

    from include.pipelines.movies.quality import Source

    lake = ctx.pipeline_lake
    ratings = lake.read_arrow("ratings", ctx.ds, columns=["rating"]).column("rating")
    mean = pc.mean(ratings).as_py()
    return Source(ratings=lake.row_count("ratings", ctx.ds), c=float(mean) if mean is not None else 0.0)


@job("movies.marts")
def marts(ctx: JobContext) -> dict[str, Any]:
    """Compute the three marts from the run's ``ratings``, ``links`` and ``keywords``; publish them
    only if every check of :func:`.quality.check_marts` passes."""
    from include.pipelines.movies.quality import check_marts
    from include.pipelines.movies.transforms import keyword_ratings, movie_ratings, ratings_by_year

    source = _source(ctx)
    ratings, links, keywords = steps.together(ctx, steps.read_table(ctx, "ratings", exact_types=True),
                                              steps.read_table(ctx, "links", exact_types=True),
                                              steps.read_exploded(ctx, "keywords", "keywords"))
    outputs = {
        "movie_ratings": movie_ratings(ratings, links, source.c),
        "keyword_ratings": keyword_ratings(ratings, links, keywords),
        "ratings_by_year": ratings_by_year(ratings),
    }
    summary = steps.publish_checked(ctx, outputs, lambda tables: check_marts(tables, source))
    events = {name: {"ds": ctx.ds, "rows": summary[name]["rows_out"]} for name in MARTS}
    return {"ratings": source.ratings, "c": source.c, **summary, "asset_events": events}
