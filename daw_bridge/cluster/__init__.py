"""Scale-out on Ray: separation workers as Ray actors, for ``batch --ray`` and ``serve``.

Ray is optional (``pip install "daw-bridge[cluster]"``); nothing here imports it
until a cluster is asked for, so the rest of daw-bridge runs without it.

Only the separation itself (the model's forward passes) runs on the cluster:
reading the song, resampling, the sum-to-input residual, writing and the
all-or-nothing delivery stay in the calling process (see :mod:`.separator`).
"""
