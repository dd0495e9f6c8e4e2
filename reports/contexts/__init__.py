"""One context builder per report: a Session (or, for the index, the folder) in, the dict its
template renders out. Each reads through ``reports.queries`` and draws with ``reports.charts``;
none writes anything.
"""

from reports.contexts.batch import batch_context
from reports.contexts.call import call_context
from reports.contexts.escalation import escalation_window
from reports.contexts.index import index_context
from reports.contexts.model import model_context

__all__ = ["batch_context", "call_context", "escalation_window", "index_context",
           "model_context"]
