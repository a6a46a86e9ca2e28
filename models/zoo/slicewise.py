"""The 2D variants of thesis section 3.3.2: a 2D network per axial slice, max over slices, one layer.

"The 2D CNN extracts features of individual axial slices.  A global max pooling step reduces
these features to a 1D vector, to which a fully connected layer is applied" (T§3.3.2, after
Li et al.'s COVNet).  The backbone sees every slice of the same ``(C, D, H, W)`` volume the 3D
networks see, as a batch of ``D`` images.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SliceMaxNet"]


class SliceMaxNet(nn.Module):
    """Apply a 2D backbone to each axial slice, take the maximum over slices, then a linear layer.

    Parameters
    ----------
    backbone : torch.nn.Module
        A 2D network without head: ``(N, C, H, W) -> (N, num_features)``.
    num_features : int
        Length of the backbone's feature vector.
    out_channels : int
        Outputs of the final linear layer.

    Raises
    ------
    ValueError
        For non-positive ``num_features`` or ``out_channels``.
    """

    def __init__(self, backbone: nn.Module, num_features: int, out_channels: int) -> None:
        super().__init__()
        if num_features < 1 or out_channels < 1:
            raise ValueError(f"num_features and out_channels must be positive, got {num_features}, {out_channels}")
        self.backbone = backbone
        self.num_features = num_features
        self.fc = nn.Linear(num_features, out_channels)

    def slice_features(self, x: Tensor) -> Tensor:
        """Per-slice features ``(N, D, num_features)`` of a volume batch ``(N, C, D, H, W)``."""
        if x.ndim != 5:
            raise ValueError(f"expected a volume batch (N, C, D, H, W), got shape {tuple(x.shape)}")
        n, c, d, h, w = x.shape
        slices = x.transpose(1, 2).reshape(n * d, c, h, w)
        features: Tensor = self.backbone(slices)
        return features.reshape(n, d, -1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, out_channels)`` from the slice-wise maximum of the backbone features."""
        out: Tensor = self.fc(self.slice_features(x).amax(dim=1))
        return out
