"""The original models rebuilt in tf-keras (and Keras 3) for the conversion parity tests.

Each builder follows its source line by line (tqbl/dcase2018_task2 ``convnet.py`` /
``gated_conv.py``; the commented ``build_model_mel`` of finejuly/dcase2018_task2_cochlearai;
kapre 0.1.3.1 ``Melspectrogram``), with Keras 2.2.4's defaults made explicit where tf-keras
changed them (GRU ``reset_after=False``, ``recurrent_activation='hard_sigmoid'``). dense-wav has
no public source: its builder mirrors jaxadv's reconstruction. Only the tests import this module.
"""

from __future__ import annotations

import librosa
import numpy as np
import tensorflow as tf
import tf_keras

L = tf_keras.layers
K = tf_keras.backend

IQBAL_FILTERS = (64, 128, 256, 512, 512)
COCHLEAR_FILTERS = (16, 32, 64, 128, 256, 512, 512, 512)


def _w(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class GatedConv(L.Conv2D):
    """tqbl's ``gated_conv.GatedConv``: Conv2D with 2n filters → value * sigmoid(gate)."""

    def __init__(self, n_filters=64, kernel_size=(3, 3), **kwargs):
        kwargs.pop("filters", None)
        super().__init__(filters=n_filters * 2, kernel_size=kernel_size, **kwargs)
        self.n_filters = n_filters

    def call(self, inputs):
        output = super().call(inputs)
        n = self.n_filters
        return output[:, :, :, :n] * tf.sigmoid(output[:, :, :, n:])

    def get_config(self):
        config = super().get_config()
        config["n_filters"] = self.n_filters
        del config["filters"]
        return config


def iqbal_model(arch: str, width: float = 1.0, n_classes: int = 41) -> tf_keras.Model:
    """``convnet.vgg13`` / ``crnn`` / ``gcnn`` with 128x64x1 inputs."""
    inp = L.Input(shape=(128, 64, 1), name="input_tensor")
    x = inp
    for f in IQBAL_FILTERS:
        n = _w(f, width)
        for _ in range(2):
            if arch == "gcnn":
                x = GatedConv(n, padding="same")(x)
            else:
                x = L.Conv2D(n, kernel_size=(3, 3), padding="same", activation="relu")(x)
            x = L.BatchNormalization(axis=-1)(x)
        x = L.MaxPooling2D(pool_size=(2, 2))(x)
    if arch == "crnn":
        x = L.Lambda(lambda t: K.mean(t, axis=2))(x)
        gru = L.GRU(
            _w(512, width),
            activation="relu",
            recurrent_activation="hard_sigmoid",  # Keras 2.2.4 default
            reset_after=False,  # Keras 2.2.4 default
            return_sequences=True,
        )
        x = L.Bidirectional(gru)(x)
        x = L.GlobalAveragePooling1D()(x)
    else:
        x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(n_classes, activation="softmax")(x)
    return tf_keras.Model(inp, x, name=arch)


class Melspectrogram(L.Layer):
    """kapre 0.1.3.1 ``Melspectrogram`` (channels_last), same weights, config keys and maths.

    STFT as ``conv2d`` with fixed DFT kernels ``(n_dft, 1, 1, n_freq)`` at stride ``(n_hop, 1)``
    and TF 'SAME' padding, power, mel by ``K.dot`` with a (n_freq, n_mels) matrix from
    ``librosa.filters.mel``, ``power_melgram=1`` → sqrt, ``amplitude_to_decibel`` with the maximum
    over the **whole batch tensor** and an 80 dB floor.
    """

    def __init__(
        self,
        n_dft=512,
        n_hop=None,
        padding="same",
        power_spectrogram=2.0,
        return_decibel_spectrogram=False,
        trainable_kernel=False,
        image_data_format="channels_last",
        sr=22050,
        n_mels=128,
        fmin=0.0,
        fmax=None,
        power_melgram=1.0,
        return_decibel_melgram=False,
        trainable_fb=False,
        htk=False,
        norm=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.n_dft, self.n_hop = n_dft, n_hop or n_dft // 2
        self.padding, self.power_spectrogram = padding, float(power_spectrogram)
        self.return_decibel_spectrogram = return_decibel_spectrogram
        self.trainable_kernel, self.image_data_format = trainable_kernel, image_data_format
        self.sr, self.n_mels, self.fmin = int(sr), n_mels, fmin
        self.fmax = fmax if fmax is not None else float(sr) / 2
        self.power_melgram, self.return_decibel_melgram = power_melgram, return_decibel_melgram
        self.trainable_fb, self.htk, self.norm = trainable_fb, htk, norm

    def build(self, input_shape):
        n = self.n_dft
        nb = n // 2 + 1
        t = np.arange(n)
        w_ks = np.arange(nb) * 2 * np.pi / float(n)
        window = librosa.filters.get_window("hann", n, fftbins=True).astype(np.float32)
        real = (np.cos(w_ks[:, None] * t[None, :]) * window[None, :]).T[:, None, None, :]
        imag = (-np.sin(w_ks[:, None] * t[None, :]) * window[None, :]).T[:, None, None, :]
        mel = librosa.filters.mel(
            sr=self.sr,
            n_fft=n,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
            htk=self.htk,
            norm="slaney",
        ).T.astype(np.float32)
        self.real_kernels = self.add_weight(
            name="real_kernels",
            shape=real.shape,
            trainable=False,
            initializer=tf_keras.initializers.Constant(real.astype(np.float32)),
        )
        self.imag_kernels = self.add_weight(
            name="imag_kernels",
            shape=imag.shape,
            trainable=False,
            initializer=tf_keras.initializers.Constant(imag.astype(np.float32)),
        )
        self.freq2mel = self.add_weight(
            name="Variable",
            shape=mel.shape,
            trainable=False,
            initializer=tf_keras.initializers.Constant(mel),
        )
        super().build(input_shape)

    def call(self, x):
        x = tf.transpose(x[:, 0:1, :], [0, 2, 1])[:, :, :, None]  # (batch, len, 1, 1)
        pad = self.padding.upper()
        re = tf.nn.conv2d(x, self.real_kernels, strides=(self.n_hop, 1), padding=pad)
        im = tf.nn.conv2d(x, self.imag_kernels, strides=(self.n_hop, 1), padding=pad)
        power = re**2 + im**2  # (batch, time, 1, freq)
        power = tf.transpose(power, [0, 3, 1, 2])  # channels_last (batch, freq, time, ch)
        power = tf.transpose(power, [0, 3, 2, 1])  # (batch, ch, time, freq)
        out = K.dot(power, self.freq2mel)
        out = tf.transpose(out, [0, 3, 2, 1])  # (batch, mels, time, ch)
        out = tf.pow(tf.sqrt(out), self.power_melgram)
        # kapre.backend_keras.amplitude_to_decibel(amin=1e-10, dynamic_range=80)
        log_spec = 10 * tf.math.log(tf.maximum(out, 1e-10)) / np.float32(np.log(10))
        log_spec = log_spec - tf.reduce_max(log_spec)
        return tf.maximum(log_spec, -80.0)

    def get_config(self):
        config = {
            "n_dft": self.n_dft,
            "n_hop": self.n_hop,
            "padding": self.padding,
            "power_spectrogram": self.power_spectrogram,
            "return_decibel_spectrogram": self.return_decibel_spectrogram,
            "trainable_kernel": self.trainable_kernel,
            "image_data_format": self.image_data_format,
            "sr": self.sr,
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "trainable_fb": self.trainable_fb,
            "power_melgram": self.power_melgram,
            "return_decibel_melgram": self.return_decibel_melgram,
            "htk": self.htk,
            "norm": self.norm,
        }
        return {**super().get_config(), **config}


def _se_block(x, f, ndim):
    """``Conv2D_TD_BAC_mel`` (ndim 2) or its Conv1D counterpart (ndim 1)."""
    Conv = L.Conv2D if ndim == 2 else L.Conv1D
    GAP = L.GlobalAveragePooling2D if ndim == 2 else L.GlobalAveragePooling1D
    inputs = x
    x = L.BatchNormalization()(inputs)
    x = L.Activation("relu")(x)
    x = Conv(f, (1,) * ndim, padding="same", activation="linear")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = Conv(f, (3,) * ndim, padding="same", activation="linear")(x)
    se = GAP()(x)
    se = L.Reshape((1,) * ndim + (f,))(se)
    se = L.Dense(f // 2, activation="relu")(se)
    se = L.Dense(f, activation="sigmoid")(se)
    x = L.Multiply()([x, se])
    return L.Concatenate()([x, inputs])


def cochlear_model(arch: str, width: float = 1.0, n_classes: int = 41) -> tf_keras.Model:
    """dense-mel (``build_model_mel``) or dense-wav (jaxadv's reconstruction) in tf-keras."""
    ndim = 2 if arch == "dense_mel" else 1
    Conv = L.Conv2D if ndim == 2 else L.Conv1D
    inputs = L.Input(shape=(None,))
    x = L.Reshape((-1, 1))(inputs)
    x = L.BatchNormalization()(x)
    if arch == "dense_mel":
        x = L.Reshape((1, -1))(x)
        x = Melspectrogram(
            n_dft=1024,
            n_hop=128,
            padding="same",
            sr=32000,
            n_mels=64,
            fmin=0.0,
            fmax=16000.0,
            power_melgram=1.0,
            return_decibel_melgram=True,
            trainable_fb=False,
            trainable_kernel=False,
            name="trainable_stft",
        )(x)
        x = L.Permute((3, 2, 1))(x)
        x = L.BatchNormalization()(x)
        x = L.Permute((3, 2, 1))(x)
    x1 = Conv(_w(15, width), (3,) * ndim, padding="same", activation="linear")(x)
    x = L.Concatenate()([x, x1])
    for f in COCHLEAR_FILTERS:
        x = _se_block(x, _w(f, width), ndim)
        if ndim == 2:
            x = L.MaxPooling2D(pool_size=(2, 2), padding="same")(x)
        else:
            x = L.MaxPooling1D(pool_size=3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    GAP = L.GlobalAveragePooling2D if ndim == 2 else L.GlobalAveragePooling1D
    outs = []
    for _ in range(8):
        o = L.Dense(n_classes, activation="linear")(x)
        o = GAP()(o)
        outs.append(L.Activation("softmax")(o))
    return tf_keras.Model(inputs=[inputs], outputs=[L.Average()(outs)], name=arch)


def keras3_vgg13(width: float, n_classes: int = 41):
    """``convnet.vgg13`` built with Keras 3 (saved as its legacy .h5)."""
    import keras

    KL = keras.layers
    inp = KL.Input(shape=(128, 64, 1), name="input_tensor")
    x = inp
    for f in IQBAL_FILTERS:
        for _ in range(2):
            x = KL.Conv2D(_w(f, width), (3, 3), padding="same", activation="relu")(x)
            x = KL.BatchNormalization(axis=-1)(x)
        x = KL.MaxPooling2D(pool_size=(2, 2))(x)
    x = KL.GlobalAveragePooling2D()(x)
    x = KL.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inp, x, name="vgg13")


def randomise(model, calibration: np.ndarray, seed: int, head_scale: float = 1.0) -> None:
    """Random weights that keep every layer unsaturated and input-dependent.

    He-normal kernels, small random biases, BN gamma in [0.8, 1.2] and beta ~ N(0, 0.1); BN
    moving statistics calibrated by one training-mode pass with momentum 0 (so every BN sees
    inputs of its own scale), then perturbed (mean + 0.1 std noise, variance x U[0.5, 2]).
    ``head_scale`` multiplies the kernels of the output Dense layers (41 units): the 8 heads of
    the Cochlear models need smaller ones to stay unsaturated. Works for tf-keras and Keras 3.
    """
    rng = np.random.default_rng(seed)
    bns = []
    for layer in model.layers:
        cls = type(layer).__name__
        ws = layer.get_weights()
        if not ws or cls == "Melspectrogram":
            continue
        if cls == "BatchNormalization":
            c = ws[0].shape
            layer.set_weights(
                [rng.uniform(0.8, 1.2, c), rng.normal(0, 0.1, c), np.zeros(c), np.ones(c)]
            )
            bns.append(layer)
        elif cls == "Bidirectional":
            new = []
            for w in ws:
                scale = 0.1 if w.ndim == 1 else 1.0 / np.sqrt(w.shape[0])
                new.append(rng.normal(0, scale, w.shape))
            layer.set_weights(new)
        else:  # Conv1D, Conv2D, GatedConv, Dense: [kernel, bias]
            kernel, bias = ws
            fan_in = int(np.prod(kernel.shape[:-1]))
            scale = np.sqrt(2.0 / fan_in) * (head_scale if kernel.shape[-1] == 41 else 1.0)
            layer.set_weights(
                [
                    rng.normal(0, scale, kernel.shape),
                    rng.normal(0, 0.05, bias.shape),
                ]
            )
    for layer in bns:
        layer.momentum = 0.0
    model(calibration, training=True)
    for layer in bns:
        layer.momentum = 0.99
        gamma, beta, mean, var = layer.get_weights()
        std = np.sqrt(var)
        mean = mean + 0.1 * std * rng.standard_normal(mean.shape)
        var = var * rng.uniform(0.5, 2.0, var.shape)
        layer.set_weights([gamma, beta, mean, var])
