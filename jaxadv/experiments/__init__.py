"""The paper's three experiments as commands (``python -m jaxadv.experiments.<name>``).

The commands: :mod:`untargeted`, :mod:`targeted`, :mod:`transfer` (and the budget study
:mod:`convergence`). Their presets: :mod:`configs` (one config module per experiment). The parts
they share, one idea each: :mod:`flags` (command line, ``--set``, models and checkpoints),
:mod:`clips` (clip selection and loading), :mod:`models` (restored models, clean predictions),
:mod:`devices` (sharding), :mod:`sweep` (jobs through the attack engine), :mod:`runfolder`
(run folders, ``config.json``, resume fingerprints), :mod:`runner` (one run end to end).
Outputs: :mod:`results` (resumable per-example CSV), :mod:`arrays` (the adversarial waveforms),
:mod:`tables` (Tables 2-5), :mod:`figures` (Figures 1-3). Nothing is imported eagerly.
"""
