"""Audio: decoding and resampling (``decode``), filter banks and the Hann window (``filters``),
STFT-based DSP kernels (``dsp``), time intervals (``intervals``) and voice activity detection
(``vad``).
"""
