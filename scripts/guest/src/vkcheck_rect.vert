#version 450
// vkcheck: an axis-aligned rectangle as two triangles (6 vertices, no vertex buffer). The corners
// come from a push constant in normalized device coordinates: (x0, y0, x1, y1).
layout(push_constant) uniform Rect { vec4 r; } pc;

void main()
{
    // Triangle 1: (x0,y0) (x1,y0) (x0,y1); triangle 2: (x1,y0) (x1,y1) (x0,y1).
    const ivec2 corner[6] = ivec2[6](ivec2(0, 0), ivec2(1, 0), ivec2(0, 1),
                                     ivec2(1, 0), ivec2(1, 1), ivec2(0, 1));
    ivec2 c = corner[gl_VertexIndex];
    gl_Position = vec4(c.x == 0 ? pc.r.x : pc.r.z, c.y == 0 ? pc.r.y : pc.r.w, 0.0, 1.0);
}
