"""The operator dashboard served by ``dlm serve`` at ``/`` (see docs/dashboard.md).

Pages are public HTML shells; every figure in them is loaded by the page's script with the
user's token (``routes.py``), rendered on the server as escaped HTML fragments (``fragments.py``)
from figures computed in memory (``figures.py``). The occupancy time series the inventory does
not keep is sampled into a ring buffer (``history.py``).
"""
