"""Where an ablation's rows run: worker processes on this machine, spread over its GPUs, or jobs on a
cluster through submitit.

- ``devices``: which GPU each worker process of ``textvae ablate --jobs N`` is pinned to;
- ``pool``: the worker processes of one machine (one per ``--jobs``), their GPUs and the MPS daemon;
- ``settings``: the scheduler settings of ``--executor slurm`` (flags or an ``--executor-config`` file);
- ``jobs``: the job ids kept in ``--out`` and the state of every row (``--status``);
- ``submit``: ``--executor local|slurm``: groups of rows as checkpointable submitit jobs, the wait, the table.
"""
