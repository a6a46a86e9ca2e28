"""Vision transformer (ViT-L/16 by default) that returns the CLS token, for simon.j's slice features.

simon.j (thesis section 4.3.3; SJ ``inference/algorithm/vit.py``, a copy of the iBOT/DINO code)
extracts, per axial slice, the CLS token of an iBOT ViT-L/16: patch 16, width 1024, 24 blocks of
16 heads, MLP ratio 4, biased QKV, LayerNorm eps 1e-6, learned position embedding for 14 x 14
patches plus the CLS token.  The feature is the CLS token *after the last block used and before
the final LayerNorm*: the extractor (SJ ``transforms.py: iBOTExtractor``) runs
``prepare_tokens`` and the blocks itself, and ``load_ibot_model`` deletes ``norm`` and ``head``.
The lung-masked model keeps only the first 16 blocks, so ``depth`` is a constructor argument.

Module names follow the iBOT checkpoints (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``, ``blocks.{i}.norm2``,
``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2``), so their state dicts load once ``norm.*``,
``head.*``, ``masked_embed`` and the unused blocks are dropped.  The input size is fixed (224 in
the member); the iBOT code's bicubic position-embedding interpolation is only reached for other
sizes, which the member never produces, so a different size is refused instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VIT_L16", "VisionTransformer", "vit_large_16"]

#: ViT-L/16 as iBOT defines it (SJ ``vit.py: vit_large``): patch, width, depth, heads, MLP ratio.
VIT_L16: dict[str, int | float] = {"patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4.0}


class _Attention(nn.Module):
    """Multi-head self-attention with one biased QKV projection (iBOT ``Attention``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Attention over the tokens; the fused kernel computes softmax(QK^T / sqrt(d)) V exactly."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        result: Tensor = self.proj(out.transpose(1, 2).reshape(b, n, c))
        return result


class _Mlp(nn.Module):
    """Linear, GELU, linear (iBOT ``Mlp`` without dropout, which is 0 at inference)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``fc2(gelu(fc1(x)))``."""
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = _Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """Both residual branches."""
        x = x + self.attn(self.norm1(x))
        out: Tensor = x + self.mlp(self.norm2(x))
        return out


class _PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` patches projected by one strided convolution."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """Tokens ``(N, patches, embed_dim)`` in row-major patch order."""
        out: Tensor = self.proj(x).flatten(2).transpose(1, 2)
        return out


class VisionTransformer(nn.Module):
    """A ViT whose ``forward`` returns the CLS token after its last block (no final norm).

    Parameters
    ----------
    image_size : int
        Side of the square input (224); the position embedding has ``(image_size / patch)^2 + 1``
        entries.
    patch_size : int
        Patch side (16).
    in_channels : int
        Input channels (3: the grey slice repeated, ImageNet-normalised per channel).
    embed_dim : int
        Token width (1024 for ViT-L).
    depth : int
        Transformer blocks actually run (24 for X_full; 16 for X_lung, SJ ``balaitous.py``).
    num_heads : int
        Attention heads (16); must divide ``embed_dim``.
    mlp_ratio : float
        Hidden width of the MLP relative to ``embed_dim`` (4).
    qkv_bias : bool
        Bias on the QKV projection (True in iBOT's ViT-L).
    layer_norm_eps : float
        LayerNorm epsilon (1e-6 in iBOT).

    Raises
    ------
    ValueError
        For non-positive sizes, a patch that does not tile the image, or heads that do not
        divide the width.
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if min(image_size, patch_size, in_channels, embed_dim, depth, num_heads) < 1 or mlp_ratio <= 0:
            raise ValueError(
                f"sizes must be positive, got image {image_size}, patch {patch_size}, channels {in_channels}, "
                f"width {embed_dim}, depth {depth}, heads {num_heads}, mlp ratio {mlp_ratio}"
            )
        if image_size % patch_size:
            raise ValueError(f"patch {patch_size} does not tile an image of {image_size}")
        if embed_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide a width of {embed_dim}")
        self.image_size = image_size
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.patch_embed = _PatchEmbed(in_channels, embed_dim, patch_size)
        patches = (image_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, patches + 1, embed_dim))
        self.blocks = nn.ModuleList(
            _Block(embed_dim, num_heads, mlp_ratio, qkv_bias, layer_norm_eps) for _ in range(depth)
        )
        self._initialise()

    def _initialise(self) -> None:
        """iBOT's initialisation: truncated normal (sd 0.02) for tokens and linear weights, zero
        biases, unit LayerNorms; the patch convolution keeps torch's default."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """CLS tokens ``(N, embed_dim)`` of images ``(N, in_channels, image_size, image_size)``.

        Raises
        ------
        ValueError
            For an input of another shape (the position embedding is not interpolated).
        """
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        cls: Tensor = tokens[:, 0]
        return cls


def vit_large_16(depth: int = 24) -> VisionTransformer:
    """ViT-L/16 at 224 x 224 (:data:`VIT_L16`), running its first ``depth`` blocks."""
    return VisionTransformer(
        image_size=224,
        patch_size=int(VIT_L16["patch_size"]),
        embed_dim=int(VIT_L16["embed_dim"]),
        depth=depth,
        num_heads=int(VIT_L16["num_heads"]),
        mlp_ratio=float(VIT_L16["mlp_ratio"]),
    )
