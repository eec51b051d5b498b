"""A client of the service: replay production rows with delayed feedback (``lossflow traffic``).

The training flow keeps the later months of the data apart as "production" rows
(``<data_dir>/runs/<run>/prepared/production.parquet``). This package replays them, in time order,
against a running ``lossflow serve`` so that the A/B split, the prediction log and the monitoring
see realistic traffic. Its pieces:

* ``rows``: :func:`production_rows` reads the rows (parquet or CSV), optionally keeps some months
  and the first ``limit`` rows, and orders them by time. Each row keeps its position in the file
  as its index: that position is the row's identity. :func:`records_of` turns rows into the JSON
  records the service takes.
* ``requests``: ``plan_requests`` turns rows into ``POST /predict`` bodies using the service's
  ``GET /info`` (the exact feature names, the target column and the task). Each request gets a
  stable unit id (``unit_id``: a BLAKE2b hash of the first row's position, modulo ``units``), so
  every replay of the same file sends the same rows as the same units, on every run and machine,
  and the service's sticky A/B assignment puts them in the same variants. A deterministic
  ``fraction`` of requests (``is_labelled``: a hash of the request's position and a seed) is
  labelled.
* ``feedback``: the labels of a labelled request are posted to ``POST /feedback`` ``delay_s``
  seconds after its answer; feedback still due when the last prediction is answered is waited
  for.
* ``client``: :func:`replay_traffic` sends the requests open-loop: request ``k`` is due
  ``k / rate`` seconds after the start, whatever happened to the earlier ones, with at most
  ``concurrency`` requests in flight over one keep-alive ``httpx.AsyncClient``. When the service
  cannot keep up, requests go out late rather than being skipped; the report says how late and
  what rate was achieved. A 503 answer (the service's log backpressure) is retried after its
  ``Retry-After`` a bounded number of times.
* ``report``: :class:`TrafficReport` and its terminal table.

Nothing is dropped silently: every planned request ends up answered, failed (counted by HTTP
status or transport error) or not sent (Ctrl-C), and every labelled answer ends up with a
feedback outcome or as not posted. :func:`run_traffic` is the blocking entry point used by the
command line; the first Ctrl-C stops sending and returns the report of what was done (in-flight
requests finish; feedback not yet posted is counted as not posted), a second one aborts.

The replay imports httpx, pandas and rich, nothing of the service.
"""

from lossflow.replay.client import DEFAULT_URL, replay_traffic, run_traffic
from lossflow.replay.errors import TrafficError
from lossflow.replay.report import TrafficReport, summary_table
from lossflow.replay.requests import TrafficOptions
from lossflow.replay.rows import find_production_data, production_rows, records_of

__all__ = [
    "DEFAULT_URL",
    "TrafficError",
    "TrafficOptions",
    "TrafficReport",
    "find_production_data",
    "production_rows",
    "records_of",
    "replay_traffic",
    "run_traffic",
    "summary_table",
]
