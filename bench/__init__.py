"""Atelier's benchmark suite: `python -m bench` (or `atelier bench`), see README "Performance".

Every figure is a ratio of two things measured side by side in the same run
(interleaved where they can be), printed with the absolute numbers it comes
from, because the machines it runs on are shared and noisy. Items:

    overhead   the whole bot path vs direct diffusers calls, per job
    batching   8 compatible jobs from 4 members, batching on vs off
    previews   previews every 5 steps (tiny autoencoder, linear) vs none
    bot        the bot process: start-up, memory, scheduler picks
    store      admission, claim and settle on an empty vs a 100 000-job database
    gpu        full-size SD 1.5 and SDXL: plain diffusers vs the engine, batches,
               share of the device's peak (skipped without CUDA)
    scale      claims/s and overhead per job with 1, 2 and 4 workers sharing a
               10 000-job queue, PostgreSQL vs SQLite

Results go to bench/results/<name>.json and .md; `--smoke` runs everything at
toy sizes in seconds so a test keeps the suite from rotting (no timing is
asserted anywhere).
"""
