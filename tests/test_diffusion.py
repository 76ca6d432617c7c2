"""The shared diffusion core: loss, prompt/token embeddings, parameter sets, functional swaps."""
import pytest
import torch

from immunobench import diffusion


def test_parameter_sets_match_sd_naming(tiny_sd):
    unet = tiny_sd.unet
    kv = diffusion.select_parameters(unet, "xattn-kv")
    assert kv and all(n.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for n in kv)
    n_blocks = sum(1 for n, _ in unet.named_parameters() if n.endswith("attn2.to_k.weight"))
    assert len(kv) == 2 * n_blocks
    xattn = diffusion.select_parameters(unet, "xattn")
    assert len(xattn) == 5 * n_blocks  # q, k, v, out.weight, out.bias
    attn = diffusion.select_parameters(unet, "attn")
    assert len(attn) == 10 * n_blocks and all(".attn1." in n or ".attn2." in n for n in attn)
    rest = diffusion.select_parameters(unet, "non-xattn")
    assert not set(rest) & set(xattn) and len(rest) + len(xattn) == len(list(unet.parameters()))
    with pytest.raises(ValueError, match="unknown parameter set"):
        diffusion.select_parameters(unet, "xatn")


def test_loss_is_the_epsilon_mse(tiny_sd):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 16, 16, generator=g)
    cond = diffusion.encode_prompts(tiny_sd, ["a photo of a church", "an artwork of Van Gogh"])
    noise = torch.randn(z.shape, generator=g)
    t = torch.tensor([10, 900])
    loss = diffusion.diffusion_loss(tiny_sd.unet, z, cond, tiny_sd.scheduler, noise=noise, timesteps=t, reduction="none")
    abar = tiny_sd.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = abar.sqrt() * z + (1 - abar).sqrt() * noise
    pred = tiny_sd.unet(noisy, t, encoder_hidden_states=cond).sample
    torch.testing.assert_close(loss, ((pred - noise) ** 2).mean(dim=(1, 2, 3)))
    a = diffusion.diffusion_loss(tiny_sd.unet, z, cond, tiny_sd.scheduler, generator=torch.Generator().manual_seed(3))
    b = diffusion.diffusion_loss(tiny_sd.unet, z, cond, tiny_sd.scheduler, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_functional_swap_equals_in_place_and_carries_second_order_grads(tiny_sd):
    unet = tiny_sd.unet
    kv = diffusion.select_parameters(unet, "xattn-kv")
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    cond = diffusion.encode_prompts(tiny_sd, ["a photo of a church"])
    kw = dict(noise=torch.randn_like(z), timesteps=torch.tensor([500]))

    theta = {n: p.detach().clone().requires_grad_(True) for n, p in kv.items()}
    first = next(iter(theta))
    with diffusion.second_order_attention():
        inner = diffusion.diffusion_loss(unet, z, cond, tiny_sd.scheduler, params=theta, **kw)
        grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
        adapted = {n: p - 0.5 * g for (n, p), g in zip(theta.items(), grads)}  # one unrolled step
        outer = diffusion.diffusion_loss(unet, z, cond, tiny_sd.scheduler, params=adapted, **kw)
        (meta,) = torch.autograd.grad(outer, [theta[first]], retain_graph=True)
        # first-order (stop-gradient through the inner gradient): θ' = θ − α·sg(g)
        stopped = {n: p - 0.5 * g.detach() for (n, p), g in zip(theta.items(), grads)}
        (first_order,) = torch.autograd.grad(
            diffusion.diffusion_loss(unet, z, cond, tiny_sd.scheduler, params=stopped, **kw), [theta[first]])
    assert meta.abs().sum() > 0 and not torch.allclose(meta, first_order)  # the Hessian term is there

    # the same swap done in place gives the same loss
    saved = {n: p.detach().clone() for n, p in kv.items()}
    with torch.no_grad():
        for n, p in kv.items():
            p.copy_(adapted[n])
        in_place = diffusion.diffusion_loss(unet, z, cond, tiny_sd.scheduler, **kw)
        for n, p in kv.items():
            p.copy_(saved[n])
    torch.testing.assert_close(in_place, outer.detach())


def test_token_embeddings_drop_bos_keep_eos(tiny_sd):
    prompts = ["a photo of a church", "an artwork of Claude Monet"]
    rows = diffusion.token_embeddings(tiny_sd, prompts)
    full = diffusion.encode_prompts(tiny_sd, prompts)
    for prompt, r, f in zip(prompts, rows, full):
        ids = tiny_sd.tokenizer(prompt).input_ids  # BOS ... EOS
        assert r.shape == (len(ids) - 1, full.shape[-1])
        torch.testing.assert_close(r, f[1 : len(ids)])
    # the text encoder is causal: a shared prefix gives identical rows (the merge must de-duplicate them)
    a, b = diffusion.token_embeddings(tiny_sd, ["an artwork of Claude Monet", "an artwork of Van Gogh"])
    torch.testing.assert_close(a[:3], b[:3])
