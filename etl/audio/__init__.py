"""Audio: decoding and resampling (``decode``), the phone line's rate and band (``telephony``) and
its simulation for training copies (``phone_line``), filter banks and the Hann window
(``filters``), STFT-based DSP kernels (``dsp``), time intervals (``intervals``) and voice activity
detection (``vad``).
"""
