#version 450
// vkcheck: a constant colour; must match DRAW_RGBA in vkcheck.c (each component k/255 exactly:
// 0.8 = 0xcc, 0.2 = 0x33, 0.4 = 0x66, 0.6 = 0x99).
layout(location = 0) out vec4 color;

void main()
{
    color = vec4(0.8, 0.2, 0.4, 0.6);
}
