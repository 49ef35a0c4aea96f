"""The paper's three experiments as commands (``python -m jaxadv.experiments.<name>``).

Library parts: :mod:`results` (resumable per-example CSV), :mod:`tables` (Tables 2-5),
:mod:`figures` (Figures 1-3). Nothing is imported eagerly.
"""
