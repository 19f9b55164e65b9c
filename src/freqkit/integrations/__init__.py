"""Adapters of :class:`freqkit.SpectralMonitor` to training frameworks, each imported only when used.

- ``freqkit.integrations.lightning.SpectralMonitorCallback``: a Lightning ``Callback`` (``pip install 'freqkit[lightning]'``);
- ``freqkit.integrations.transformers.SpectralMonitorCallback``: a Hugging Face ``TrainerCallback``
  (``pip install 'freqkit[transformers]'``).
"""
