#version 450
// vkcheck: data[i] = a nonlinear function of i, for i < count; must match expected() in vkcheck.c.
layout(local_size_x = 64) in;
layout(std430, set = 0, binding = 0) buffer Data { uint data[]; };
layout(push_constant) uniform Params { uint count; } pc;

void main()
{
    uint i = gl_GlobalInvocationID.x;
    if (i >= pc.count)
        return;
    uint x = (i * 2654435761u) ^ 0x5bd1e995u;
    x ^= x >> 15;
    x *= 0x2c1b3c6du;
    x ^= x >> 12;
    data[i] = x;
}
