/* Guest program: checks a Vulkan 1.1 driver end to end, with exact results.
 *
 * - Device: the first physical device, or the first whose name contains --device SUBSTR. Prints
 *   "VKCHECK-DEVICE: <name> driver=<driverName driverInfo> api=<x.y.z> type=<type>".
 * - Render: a WIDTHxHEIGHT R8G8B8A8_UNORM image, cleared to CLEAR_RGBA by the render pass, then a
 *   rectangle drawn in DRAW_RGBA (two triangles with corners on pixel edges, so that coverage is
 *   exact); the image is copied into a host-visible buffer and every pixel is compared. Prints
 *   "VKCHECK-RENDER: ok" or the first mismatch and the number of wrong pixels.
 * - Compute: a compute shader fills COMPUTE_WORDS words with a nonlinear function of the index
 *   (expected() below); every word is compared. Prints "VKCHECK-COMPUTE: ok" or the first mismatch.
 * - After a failed compare (which stays failed), diagnostics: the data is compared again
 *   RECHECK_DELAY_S later ("VKCHECK-RENDER: after 2 s: N wrong", the same for COMPUTE), which
 *   tells a device still writing after the fence from wrong memory; and where word 0's value
 *   sits in the mapping when it is elsewhere ("VKCHECK-COMPUTE: word 0's value is at byte N of
 *   the mapping"), which shows a mapping at the wrong offset.
 * - --bench SECONDS (the benchmark's Vulkan workload): after each check passed, its command buffer
 *   (render: clear, draw, copy to the host buffer; compute: the dispatch) is submitted again and
 *   waited for with a fence, over and over for SECONDS, then the result is compared once more.
 *   Prints "VKCHECK-BENCH: <render|compute> <n> submits in <s> s = <rate>/s".
 * Every step is printed ("VKCHECK-STEP: ...") before it runs, so a hang shows where. Fences are
 * waited for with a timeout (--timeout seconds, default 60), and an alarm ends the program if a call
 * that takes no timeout blocks for longer than the whole budget (--watchdog, default 240 s).
 * Exit status 0 only if both checks pass.
 *
 * The SPIR-V comes from vkcheck_*.vert/.frag/.comp, compiled with glslangValidator --vn into
 * headers at build time (scripts/guest/build.sh). */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <vulkan/vulkan.h>

#include "vkcheck_fill_comp.h"
#include "vkcheck_rect_frag.h"
#include "vkcheck_rect_vert.h"

#define WIDTH 64
#define HEIGHT 64
/* The rectangle in pixels: columns [RECT_X0, RECT_X1), rows [RECT_Y0, RECT_Y1), row 0 at the top.
 * Not symmetric, so that a flipped or mirrored image fails. */
#define RECT_X0 8
#define RECT_X1 40
#define RECT_Y0 20
#define RECT_Y1 52
/* R, G, B, A bytes; every component is k/255 for the float used (clear values here, the fragment
 * shader's constant in vkcheck_rect.frag). */
static const uint8_t CLEAR_RGBA[4] = {0x33, 0x66, 0x99, 0xff};
static const uint8_t DRAW_RGBA[4] = {0xcc, 0x33, 0x66, 0x99};
#define COMPUTE_WORDS 65536u
#define COMPUTE_GROUP 64u

static const char *step_name = "start";
static unsigned fence_timeout_s = 60;
static int gpu_hung; /* a fence timed out: skip the teardown, which could wait for the GPU too */
static unsigned bench_secs; /* --bench: 0 = no benchmark loops */

static void step(const char *what)
{
    step_name = what;
    printf("VKCHECK-STEP: %s\n", what);
    fflush(stdout);
}

static void on_alarm(int sig)
{
    (void)sig;
    /* Only async-signal-safe calls here. */
    static const char a[] = "VKCHECK-TIMEOUT: watchdog expired during step: ";
    if (write(1, a, sizeof a - 1) < 0) {}
    if (write(1, step_name, strlen(step_name)) < 0) {}
    if (write(1, "\n", 1) < 0) {}
    _exit(3);
}

static uint32_t expected(uint32_t i)
{
    uint32_t x = (i * 2654435761u) ^ 0x5bd1e995u;
    x ^= x >> 15;
    x *= 0x2c1b3c6du;
    x ^= x >> 12;
    return x;
}

#define CHECK(call)                                                                         \
    do {                                                                                    \
        VkResult r_ = (call);                                                               \
        if (r_ != VK_SUCCESS) {                                                             \
            printf("VKCHECK-ERROR: %s returned %d (step: %s)\n", #call, (int)r_, step_name); \
            return 1;                                                                       \
        }                                                                                   \
    } while (0)

static const char *type_name(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_OTHER: return "other";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "unknown";
    }
}

struct ctx {
    VkPhysicalDevice phys;
    VkPhysicalDeviceMemoryProperties mem;
    VkDevice dev;
    VkQueue queue;
    uint32_t qfam;
    VkCommandPool pool;
};

/* A memory type allowed by `bits` with all of `want`; with `prefer` too if there is one. */
static int pick_memory(const struct ctx *c, uint32_t bits, VkMemoryPropertyFlags want,
                       VkMemoryPropertyFlags prefer)
{
    int found = -1;
    for (uint32_t i = 0; i < c->mem.memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = c->mem.memoryTypes[i].propertyFlags;
        if (!(bits & (1u << i)) || (f & want) != want)
            continue;
        if ((f & prefer) == prefer)
            return (int)i;
        if (found < 0)
            found = (int)i;
    }
    return found;
}

struct hbuf {
    VkBuffer buf;
    VkDeviceMemory mem;
    VkDeviceSize size;
    int coherent;
    void *map;
};

static int host_buffer(const struct ctx *c, VkDeviceSize size, VkBufferUsageFlags usage, struct hbuf *b)
{
    VkBufferCreateInfo bi = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = usage,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    CHECK(vkCreateBuffer(c->dev, &bi, NULL, &b->buf));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(c->dev, b->buf, &req);
    int mt = pick_memory(c, req.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
                         VK_MEMORY_PROPERTY_HOST_COHERENT_BIT | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    if (mt < 0) {
        printf("VKCHECK-ERROR: no host-visible memory type for a buffer (bits 0x%x)\n", req.memoryTypeBits);
        return 1;
    }
    VkMemoryPropertyFlags f = c->mem.memoryTypes[mt].propertyFlags;
    b->coherent = !!(f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    b->size = size;
    printf("VKCHECK-STEP: buffer of %llu bytes in memory type %d (flags 0x%x, heap %u)\n",
           (unsigned long long)size, mt, (unsigned)f, c->mem.memoryTypes[mt].heapIndex);
    VkMemoryAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = (uint32_t)mt,
    };
    CHECK(vkAllocateMemory(c->dev, &ai, NULL, &b->mem));
    CHECK(vkBindBufferMemory(c->dev, b->buf, b->mem, 0));
    CHECK(vkMapMemory(c->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map));
    return 0;
}

/* The whole of a host buffer's memory, for flushes and invalidations. */
static VkMappedMemoryRange whole(const struct hbuf *b)
{
    VkMappedMemoryRange r = {
        .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
        .memory = b->mem,
        .offset = 0,
        .size = VK_WHOLE_SIZE,
    };
    return r;
}

/* Makes the device's writes visible to the host mapping (needed only for non-coherent memory). */
static int host_invalidate(const struct ctx *c, const struct hbuf *b)
{
    if (b->coherent)
        return 0;
    VkMappedMemoryRange r = whole(b);
    CHECK(vkInvalidateMappedMemoryRanges(c->dev, 1, &r));
    return 0;
}

/* Zeroes the host mapping and makes that visible to the device, so that no stale pattern can pass
 * a compare. */
static int host_clear(const struct ctx *c, const struct hbuf *b)
{
    memset(b->map, 0, (size_t)b->size);
    if (b->coherent)
        return 0;
    VkMappedMemoryRange r = whole(b);
    CHECK(vkFlushMappedMemoryRanges(c->dev, 1, &r));
    return 0;
}

static int shader(const struct ctx *c, const uint32_t *code, size_t size, VkShaderModule *m)
{
    VkShaderModuleCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = size,
        .pCode = code,
    };
    CHECK(vkCreateShaderModule(c->dev, &ci, NULL, m));
    return 0;
}

static int begin(const struct ctx *c, VkCommandBuffer *cb)
{
    VkCommandBufferAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = c->pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    CHECK(vkAllocateCommandBuffers(c->dev, &ai, cb));
    VkCommandBufferBeginInfo bi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        /* --bench submits the buffer again after the check. */
        .flags = bench_secs ? 0 : VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    CHECK(vkBeginCommandBuffer(*cb, &bi));
    return 0;
}

/* Submits the ended `cb` with `fence` and waits for it with the timeout; on a timeout the GPU
 * counts as hung. */
static int submit_fenced(const struct ctx *c, VkCommandBuffer cb, VkFence fence, const char *what)
{
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &cb,
    };
    CHECK(vkQueueSubmit(c->queue, 1, &si, fence));
    VkResult r = vkWaitForFences(c->dev, 1, &fence, VK_TRUE, (uint64_t)fence_timeout_s * 1000000000ull);
    if (r == VK_TIMEOUT) {
        printf("VKCHECK-ERROR: %s: fence not signalled after %u s\n", what, fence_timeout_s);
        gpu_hung = 1;
        return 1;
    }
    CHECK(r);
    return 0;
}

/* Ends, submits and waits for `cb` with a fence and a timeout. */
static int submit_wait(const struct ctx *c, VkCommandBuffer cb, const char *what)
{
    CHECK(vkEndCommandBuffer(cb));
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    CHECK(vkCreateFence(c->dev, &fi, NULL, &fence));
    char buf[160];
    snprintf(buf, sizeof buf, "%s: vkQueueSubmit, vkWaitForFences (timeout %u s)", what,
             fence_timeout_s);
    step(strdup(buf));
    if (submit_fenced(c, cb, fence, what))
        return 1;
    vkDestroyFence(c->dev, fence, NULL);
    if (!bench_secs) /* --bench: bench() submits it again; the pool frees it at teardown */
        vkFreeCommandBuffers(c->dev, c->pool, 1, &cb);
    return 0;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* --bench: submits the ended `cb` and waits for it, again and again for bench_secs seconds. */
static int bench(const struct ctx *c, VkCommandBuffer cb, const char *what)
{
    char buf[160];
    snprintf(buf, sizeof buf, "%s: bench (%u s)", what, bench_secs);
    step(strdup(buf));
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    CHECK(vkCreateFence(c->dev, &fi, NULL, &fence));
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long n = 0;
    double elapsed;
    do {
        if (submit_fenced(c, cb, fence, what))
            return 1;
        CHECK(vkResetFences(c->dev, 1, &fence));
        n++;
        elapsed = seconds_since(&t0);
    } while (elapsed < bench_secs);
    vkDestroyFence(c->dev, fence, NULL);
    printf("VKCHECK-BENCH: %s %lu submits in %.3f s = %.1f/s\n", what, n, elapsed, n / elapsed);
    return 0;
}

/* After a failed compare, the data is compared again this much later: a device that finished
 * after the fence signalled shows as fewer errors then. */
#define RECHECK_DELAY_S 2u

/* Wrong pixels of the render test's read-back; prints the first if `report`. */
static unsigned render_mismatches(const uint8_t *px, int report)
{
    unsigned bad = 0;
    for (unsigned y = 0; y < HEIGHT; y++) {
        for (unsigned x = 0; x < WIDTH; x++) {
            int inside = x >= RECT_X0 && x < RECT_X1 && y >= RECT_Y0 && y < RECT_Y1;
            const uint8_t *want = inside ? DRAW_RGBA : CLEAR_RGBA;
            const uint8_t *got = px + ((size_t)y * WIDTH + x) * 4;
            if (memcmp(got, want, 4) != 0) {
                if (bad == 0 && report)
                    printf("VKCHECK-RENDER: first mismatch at (%u,%u): got %02x%02x%02x%02x, "
                           "expected %02x%02x%02x%02x (%s)\n",
                           x, y, got[0], got[1], got[2], got[3], want[0], want[1], want[2], want[3],
                           inside ? "rectangle" : "clear colour");
                bad++;
            }
        }
    }
    return bad;
}

/* Wrong words of the compute test's buffer; prints the first if `report`. */
static unsigned compute_mismatches(const uint32_t *v, int report)
{
    unsigned bad = 0;
    for (uint32_t i = 0; i < COMPUTE_WORDS; i++) {
        if (v[i] != expected(i)) {
            if (bad == 0 && report)
                printf("VKCHECK-COMPUTE: first mismatch at word %u: got 0x%08x, expected 0x%08x\n", i,
                       v[i], expected(i));
            bad++;
        }
    }
    return bad;
}

static int render_test(const struct ctx *c)
{
    const VkFormat fmt = VK_FORMAT_R8G8B8A8_UNORM;
    step("render: image");
    VkImageCreateInfo ii = {
        .sType = VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO,
        .imageType = VK_IMAGE_TYPE_2D,
        .format = fmt,
        .extent = {WIDTH, HEIGHT, 1},
        .mipLevels = 1,
        .arrayLayers = 1,
        .samples = VK_SAMPLE_COUNT_1_BIT,
        .tiling = VK_IMAGE_TILING_OPTIMAL,
        .usage = VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
        .initialLayout = VK_IMAGE_LAYOUT_UNDEFINED,
    };
    VkImage image;
    CHECK(vkCreateImage(c->dev, &ii, NULL, &image));
    VkMemoryRequirements req;
    vkGetImageMemoryRequirements(c->dev, image, &req);
    int mt = pick_memory(c, req.memoryTypeBits, 0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (mt < 0) {
        printf("VKCHECK-ERROR: no memory type for the image (bits 0x%x)\n", req.memoryTypeBits);
        return 1;
    }
    VkMemoryAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = (uint32_t)mt,
    };
    VkDeviceMemory imem;
    CHECK(vkAllocateMemory(c->dev, &ai, NULL, &imem));
    CHECK(vkBindImageMemory(c->dev, image, imem, 0));
    VkImageViewCreateInfo vi = {
        .sType = VK_STRUCTURE_TYPE_IMAGE_VIEW_CREATE_INFO,
        .image = image,
        .viewType = VK_IMAGE_VIEW_TYPE_2D,
        .format = fmt,
        .subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, 0, 1},
    };
    VkImageView view;
    CHECK(vkCreateImageView(c->dev, &vi, NULL, &view));

    step("render: render pass, framebuffer");
    VkAttachmentDescription att = {
        .format = fmt,
        .samples = VK_SAMPLE_COUNT_1_BIT,
        .loadOp = VK_ATTACHMENT_LOAD_OP_CLEAR,
        .storeOp = VK_ATTACHMENT_STORE_OP_STORE,
        .stencilLoadOp = VK_ATTACHMENT_LOAD_OP_DONT_CARE,
        .stencilStoreOp = VK_ATTACHMENT_STORE_OP_DONT_CARE,
        .initialLayout = VK_IMAGE_LAYOUT_UNDEFINED,
        .finalLayout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL,
    };
    VkAttachmentReference aref = {0, VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL};
    VkSubpassDescription sub = {
        .pipelineBindPoint = VK_PIPELINE_BIND_POINT_GRAPHICS,
        .colorAttachmentCount = 1,
        .pColorAttachments = &aref,
    };
    /* The copy after the pass waits for the colour writes. */
    VkSubpassDependency dep = {
        .srcSubpass = 0,
        .dstSubpass = VK_SUBPASS_EXTERNAL,
        .srcStageMask = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT,
        .dstStageMask = VK_PIPELINE_STAGE_TRANSFER_BIT,
        .srcAccessMask = VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT,
    };
    VkRenderPassCreateInfo rpi = {
        .sType = VK_STRUCTURE_TYPE_RENDER_PASS_CREATE_INFO,
        .attachmentCount = 1,
        .pAttachments = &att,
        .subpassCount = 1,
        .pSubpasses = &sub,
        .dependencyCount = 1,
        .pDependencies = &dep,
    };
    VkRenderPass rp;
    CHECK(vkCreateRenderPass(c->dev, &rpi, NULL, &rp));
    VkFramebufferCreateInfo fbi = {
        .sType = VK_STRUCTURE_TYPE_FRAMEBUFFER_CREATE_INFO,
        .renderPass = rp,
        .attachmentCount = 1,
        .pAttachments = &view,
        .width = WIDTH,
        .height = HEIGHT,
        .layers = 1,
    };
    VkFramebuffer fb;
    CHECK(vkCreateFramebuffer(c->dev, &fbi, NULL, &fb));

    step("render: graphics pipeline");
    VkShaderModule vs, fs;
    if (shader(c, spv_vkcheck_rect_vert, sizeof spv_vkcheck_rect_vert, &vs) ||
        shader(c, spv_vkcheck_rect_frag, sizeof spv_vkcheck_rect_frag, &fs))
        return 1;
    VkPushConstantRange pcr = {VK_SHADER_STAGE_VERTEX_BIT, 0, 4 * sizeof(float)};
    VkPipelineLayoutCreateInfo pli = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &pcr,
    };
    VkPipelineLayout layout;
    CHECK(vkCreatePipelineLayout(c->dev, &pli, NULL, &layout));
    VkPipelineShaderStageCreateInfo stages[2] = {
        {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
         .stage = VK_SHADER_STAGE_VERTEX_BIT, .module = vs, .pName = "main"},
        {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
         .stage = VK_SHADER_STAGE_FRAGMENT_BIT, .module = fs, .pName = "main"},
    };
    VkPipelineVertexInputStateCreateInfo vin = {.sType = VK_STRUCTURE_TYPE_PIPELINE_VERTEX_INPUT_STATE_CREATE_INFO};
    VkPipelineInputAssemblyStateCreateInfo ia = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_INPUT_ASSEMBLY_STATE_CREATE_INFO,
        .topology = VK_PRIMITIVE_TOPOLOGY_TRIANGLE_LIST,
    };
    VkViewport vp = {0, 0, WIDTH, HEIGHT, 0, 1};
    VkRect2D sc = {{0, 0}, {WIDTH, HEIGHT}};
    VkPipelineViewportStateCreateInfo vps = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_VIEWPORT_STATE_CREATE_INFO,
        .viewportCount = 1,
        .pViewports = &vp,
        .scissorCount = 1,
        .pScissors = &sc,
    };
    VkPipelineRasterizationStateCreateInfo rs = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_RASTERIZATION_STATE_CREATE_INFO,
        .polygonMode = VK_POLYGON_MODE_FILL,
        .cullMode = VK_CULL_MODE_NONE,
        .frontFace = VK_FRONT_FACE_COUNTER_CLOCKWISE,
        .lineWidth = 1.0f,
    };
    VkPipelineMultisampleStateCreateInfo ms = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_MULTISAMPLE_STATE_CREATE_INFO,
        .rasterizationSamples = VK_SAMPLE_COUNT_1_BIT,
    };
    VkPipelineColorBlendAttachmentState cba = {
        .blendEnable = VK_FALSE,
        .colorWriteMask = VK_COLOR_COMPONENT_R_BIT | VK_COLOR_COMPONENT_G_BIT |
                          VK_COLOR_COMPONENT_B_BIT | VK_COLOR_COMPONENT_A_BIT,
    };
    VkPipelineColorBlendStateCreateInfo cb = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_COLOR_BLEND_STATE_CREATE_INFO,
        .attachmentCount = 1,
        .pAttachments = &cba,
    };
    VkGraphicsPipelineCreateInfo gpi = {
        .sType = VK_STRUCTURE_TYPE_GRAPHICS_PIPELINE_CREATE_INFO,
        .stageCount = 2,
        .pStages = stages,
        .pVertexInputState = &vin,
        .pInputAssemblyState = &ia,
        .pViewportState = &vps,
        .pRasterizationState = &rs,
        .pMultisampleState = &ms,
        .pColorBlendState = &cb,
        .layout = layout,
        .renderPass = rp,
        .subpass = 0,
    };
    VkPipeline pipe;
    CHECK(vkCreateGraphicsPipelines(c->dev, VK_NULL_HANDLE, 1, &gpi, NULL, &pipe));

    step("render: read-back buffer");
    struct hbuf out;
    if (host_buffer(c, (VkDeviceSize)WIDTH * HEIGHT * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT, &out))
        return 1;
    if (host_clear(c, &out))
        return 1;

    step("render: record");
    VkCommandBuffer cmd;
    if (begin(c, &cmd))
        return 1;
    VkClearValue clear;
    for (int i = 0; i < 4; i++)
        clear.color.float32[i] = CLEAR_RGBA[i] / 255.0f;
    VkRenderPassBeginInfo rbi = {
        .sType = VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO,
        .renderPass = rp,
        .framebuffer = fb,
        .renderArea = {{0, 0}, {WIDTH, HEIGHT}},
        .clearValueCount = 1,
        .pClearValues = &clear,
    };
    vkCmdBeginRenderPass(cmd, &rbi, VK_SUBPASS_CONTENTS_INLINE);
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, pipe);
    /* Pixel edges to NDC: x = 2 * px / WIDTH - 1 (exact in float for these sizes). */
    float rect[4] = {2.0f * RECT_X0 / WIDTH - 1.0f, 2.0f * RECT_Y0 / HEIGHT - 1.0f,
                     2.0f * RECT_X1 / WIDTH - 1.0f, 2.0f * RECT_Y1 / HEIGHT - 1.0f};
    vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_VERTEX_BIT, 0, sizeof rect, rect);
    vkCmdDraw(cmd, 6, 1, 0, 0);
    vkCmdEndRenderPass(cmd);
    VkBufferImageCopy region = {
        .bufferOffset = 0,
        .bufferRowLength = 0,
        .bufferImageHeight = 0,
        .imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1},
        .imageOffset = {0, 0, 0},
        .imageExtent = {WIDTH, HEIGHT, 1},
    };
    vkCmdCopyImageToBuffer(cmd, image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, out.buf, 1, &region);
    VkBufferMemoryBarrier hb = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
        .srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
        .dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
        .buffer = out.buf,
        .offset = 0,
        .size = VK_WHOLE_SIZE,
    };
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 0, NULL,
                         1, &hb, 0, NULL);
    if (submit_wait(c, cmd, "render") || host_invalidate(c, &out))
        return 1;

    step("render: compare");
    unsigned bad = render_mismatches(out.map, 1);
    if (bad) {
        printf("VKCHECK-RENDER: FAIL %u of %u pixels wrong\n", bad, WIDTH * HEIGHT);
        /* Diagnostic only (the check has failed): late device writes show as fewer errors. */
        sleep(RECHECK_DELAY_S);
        if (host_invalidate(c, &out) == 0)
            printf("VKCHECK-RENDER: after %u s: %u wrong\n", RECHECK_DELAY_S,
                   render_mismatches(out.map, 0));
        return 1;
    }
    printf("VKCHECK-RENDER: ok (%ux%u, all %u pixels exact)\n", WIDTH, HEIGHT, WIDTH * HEIGHT);
    if (bench_secs) {
        if (host_clear(c, &out))
            return 1;
        if (bench(c, cmd, "render") || host_invalidate(c, &out))
            return 1;
        bad = render_mismatches(out.map, 1);
        if (bad) {
            printf("VKCHECK-RENDER: FAIL after the bench: %u of %u pixels wrong\n", bad, WIDTH * HEIGHT);
            return 1;
        }
        printf("VKCHECK-RENDER: ok after the bench\n");
    }

    vkUnmapMemory(c->dev, out.mem);
    vkDestroyBuffer(c->dev, out.buf, NULL);
    vkFreeMemory(c->dev, out.mem, NULL);
    vkDestroyPipeline(c->dev, pipe, NULL);
    vkDestroyPipelineLayout(c->dev, layout, NULL);
    vkDestroyShaderModule(c->dev, vs, NULL);
    vkDestroyShaderModule(c->dev, fs, NULL);
    vkDestroyFramebuffer(c->dev, fb, NULL);
    vkDestroyRenderPass(c->dev, rp, NULL);
    vkDestroyImageView(c->dev, view, NULL);
    vkDestroyImage(c->dev, image, NULL);
    vkFreeMemory(c->dev, imem, NULL);
    return 0;
}

static int compute_test(const struct ctx *c)
{
    step("compute: storage buffer");
    struct hbuf data;
    if (host_buffer(c, (VkDeviceSize)COMPUTE_WORDS * 4, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, &data))
        return 1;
    if (host_clear(c, &data))
        return 1;

    step("compute: pipeline");
    VkDescriptorSetLayoutBinding bind = {
        .binding = 0,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .descriptorCount = 1,
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
    };
    VkDescriptorSetLayoutCreateInfo dli = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = 1,
        .pBindings = &bind,
    };
    VkDescriptorSetLayout dsl;
    CHECK(vkCreateDescriptorSetLayout(c->dev, &dli, NULL, &dsl));
    VkPushConstantRange pcr = {VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(uint32_t)};
    VkPipelineLayoutCreateInfo pli = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &dsl,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &pcr,
    };
    VkPipelineLayout layout;
    CHECK(vkCreatePipelineLayout(c->dev, &pli, NULL, &layout));
    VkShaderModule cs;
    if (shader(c, spv_vkcheck_fill_comp, sizeof spv_vkcheck_fill_comp, &cs))
        return 1;
    VkComputePipelineCreateInfo cpi = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = cs, .pName = "main"},
        .layout = layout,
    };
    VkPipeline pipe;
    CHECK(vkCreateComputePipelines(c->dev, VK_NULL_HANDLE, 1, &cpi, NULL, &pipe));

    step("compute: descriptor set");
    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1};
    VkDescriptorPoolCreateInfo dpi = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = 1,
        .poolSizeCount = 1,
        .pPoolSizes = &ps,
    };
    VkDescriptorPool dp;
    CHECK(vkCreateDescriptorPool(c->dev, &dpi, NULL, &dp));
    VkDescriptorSetAllocateInfo dsai = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = dp,
        .descriptorSetCount = 1,
        .pSetLayouts = &dsl,
    };
    VkDescriptorSet set;
    CHECK(vkAllocateDescriptorSets(c->dev, &dsai, &set));
    VkDescriptorBufferInfo dbi = {data.buf, 0, VK_WHOLE_SIZE};
    VkWriteDescriptorSet w = {
        .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
        .dstSet = set,
        .dstBinding = 0,
        .descriptorCount = 1,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .pBufferInfo = &dbi,
    };
    vkUpdateDescriptorSets(c->dev, 1, &w, 0, NULL);

    step("compute: record");
    VkCommandBuffer cmd;
    if (begin(c, &cmd))
        return 1;
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0, NULL);
    uint32_t count = COMPUTE_WORDS;
    vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof count, &count);
    vkCmdDispatch(cmd, (COMPUTE_WORDS + COMPUTE_GROUP - 1) / COMPUTE_GROUP, 1, 1);
    VkBufferMemoryBarrier hb = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
        .srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
        .dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
        .buffer = data.buf,
        .offset = 0,
        .size = VK_WHOLE_SIZE,
    };
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 0,
                         NULL, 1, &hb, 0, NULL);
    if (submit_wait(c, cmd, "compute") || host_invalidate(c, &data))
        return 1;

    step("compute: compare");
    unsigned bad = compute_mismatches(data.map, 1);
    if (bad) {
        printf("VKCHECK-COMPUTE: FAIL %u of %u words wrong\n", bad, COMPUTE_WORDS);
        /* Diagnostics only (the check has failed): late device writes show as fewer errors, and
         * results at another place in the mapping as a shift. */
        const uint32_t *v = data.map;
        for (uint32_t i = 1; i + 1 < COMPUTE_WORDS; i++) {
            if (v[i] == expected(0) && v[i + 1] == expected(1)) {
                printf("VKCHECK-COMPUTE: word 0's value is at byte %u of the mapping\n", i * 4);
                break;
            }
        }
        sleep(RECHECK_DELAY_S);
        if (host_invalidate(c, &data) == 0)
            printf("VKCHECK-COMPUTE: after %u s: %u wrong\n", RECHECK_DELAY_S,
                   compute_mismatches(data.map, 0));
        return 1;
    }
    printf("VKCHECK-COMPUTE: ok (all %u words exact)\n", COMPUTE_WORDS);
    if (bench_secs) {
        if (host_clear(c, &data))
            return 1;
        if (bench(c, cmd, "compute") || host_invalidate(c, &data))
            return 1;
        bad = compute_mismatches(data.map, 1);
        if (bad) {
            printf("VKCHECK-COMPUTE: FAIL after the bench: %u of %u words wrong\n", bad, COMPUTE_WORDS);
            return 1;
        }
        printf("VKCHECK-COMPUTE: ok after the bench\n");
    }

    vkDestroyDescriptorPool(c->dev, dp, NULL);
    vkDestroyPipeline(c->dev, pipe, NULL);
    vkDestroyShaderModule(c->dev, cs, NULL);
    vkDestroyPipelineLayout(c->dev, layout, NULL);
    vkDestroyDescriptorSetLayout(c->dev, dsl, NULL);
    vkUnmapMemory(c->dev, data.mem);
    vkDestroyBuffer(c->dev, data.buf, NULL);
    vkFreeMemory(c->dev, data.mem, NULL);
    return 0;
}

static int has_ext(const VkExtensionProperties *e, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(e[i].extensionName, name))
            return 1;
    return 0;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--device SUBSTR] [--timeout SECONDS] [--watchdog SECONDS] [--bench SECONDS]\n", argv0);
    return 2;
}

int main(int argc, char **argv)
{
    const char *want_dev = NULL;
    unsigned watchdog = 240;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc)
            want_dev = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            fence_timeout_s = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--watchdog") && i + 1 < argc)
            watchdog = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--bench") && i + 1 < argc)
            bench_secs = (unsigned)strtoul(argv[++i], NULL, 10);
        else
            return usage(argv[0]);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGALRM, on_alarm);
    alarm(watchdog);

    step("vkCreateInstance");
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "vkcheck",
        .apiVersion = VK_API_VERSION_1_1,
    };
    VkInstanceCreateInfo ici = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pApplicationInfo = &app,
    };
    VkInstance inst;
    CHECK(vkCreateInstance(&ici, NULL, &inst));

    step("vkEnumeratePhysicalDevices");
    uint32_t n = 0;
    CHECK(vkEnumeratePhysicalDevices(inst, &n, NULL));
    if (n == 0) {
        printf("VKCHECK-ERROR: no Vulkan physical device\n");
        return 1;
    }
    VkPhysicalDevice *devs = calloc(n, sizeof *devs);
    CHECK(vkEnumeratePhysicalDevices(inst, &n, devs));
    struct ctx c = {0};
    VkPhysicalDeviceProperties props;
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(devs[i], &p);
        printf("VKCHECK-STEP: physical device %u: %s\n", i, p.deviceName);
        if (!c.phys && (!want_dev || strstr(p.deviceName, want_dev))) {
            c.phys = devs[i];
            props = p;
        }
    }
    if (!c.phys) {
        printf("VKCHECK-ERROR: no physical device name contains '%s'\n", want_dev);
        return 1;
    }
    if (props.apiVersion < VK_API_VERSION_1_1) {
        printf("VKCHECK-ERROR: %s supports Vulkan %u.%u only, 1.1 needed\n", props.deviceName,
               VK_API_VERSION_MAJOR(props.apiVersion), VK_API_VERSION_MINOR(props.apiVersion));
        return 1;
    }

    uint32_t next = 0;
    CHECK(vkEnumerateDeviceExtensionProperties(c.phys, NULL, &next, NULL));
    VkExtensionProperties *exts = calloc(next ? next : 1, sizeof *exts);
    CHECK(vkEnumerateDeviceExtensionProperties(c.phys, NULL, &next, exts));
    char driver[VK_MAX_DRIVER_NAME_SIZE + VK_MAX_DRIVER_INFO_SIZE + 2] = "unknown";
    if (props.apiVersion >= VK_API_VERSION_1_2 || has_ext(exts, next, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME)) {
        VkPhysicalDeviceDriverProperties dp = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
        VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &dp};
        vkGetPhysicalDeviceProperties2(c.phys, &p2);
        snprintf(driver, sizeof driver, "%s%s%s", dp.driverName, dp.driverInfo[0] ? " " : "", dp.driverInfo);
    }
    printf("VKCHECK-DEVICE: %s driver=%s api=%u.%u.%u type=%s\n", props.deviceName, driver,
           VK_API_VERSION_MAJOR(props.apiVersion), VK_API_VERSION_MINOR(props.apiVersion),
           VK_API_VERSION_PATCH(props.apiVersion), type_name(props.deviceType));
    vkGetPhysicalDeviceMemoryProperties(c.phys, &c.mem);
    for (uint32_t i = 0; i < c.mem.memoryTypeCount; i++)
        printf("VKCHECK-STEP: memory type %u: flags 0x%x heap %u (%llu MiB)\n", i,
               (unsigned)c.mem.memoryTypes[i].propertyFlags, c.mem.memoryTypes[i].heapIndex,
               (unsigned long long)(c.mem.memoryHeaps[c.mem.memoryTypes[i].heapIndex].size >> 20));

    /* One queue that does graphics and compute (which implies transfer). */
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(c.phys, &nq, NULL);
    VkQueueFamilyProperties *qf = calloc(nq ? nq : 1, sizeof *qf);
    vkGetPhysicalDeviceQueueFamilyProperties(c.phys, &nq, qf);
    c.qfam = UINT32_MAX;
    for (uint32_t i = 0; i < nq; i++) {
        VkQueueFlags want = VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT;
        if ((qf[i].queueFlags & want) == want && qf[i].queueCount > 0) {
            c.qfam = i;
            break;
        }
    }
    if (c.qfam == UINT32_MAX) {
        printf("VKCHECK-ERROR: no queue family with graphics and compute\n");
        return 1;
    }

    step("vkCreateDevice");
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = c.qfam,
        .queueCount = 1,
        .pQueuePriorities = &prio,
    };
    VkDeviceCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
    };
    CHECK(vkCreateDevice(c.phys, &dci, NULL, &c.dev));
    vkGetDeviceQueue(c.dev, c.qfam, 0, &c.queue);
    VkCommandPoolCreateInfo cpi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .queueFamilyIndex = c.qfam,
    };
    CHECK(vkCreateCommandPool(c.dev, &cpi, NULL, &c.pool));

    int render_failed = render_test(&c);
    if (render_failed)
        printf("VKCHECK-RENDER: FAIL (step: %s)\n", step_name);
    int compute_failed = gpu_hung ? 1 : compute_test(&c);
    if (compute_failed)
        printf("VKCHECK-COMPUTE: FAIL (step: %s)\n", step_name);
    if (gpu_hung) {
        printf("VKCHECK-RESULT: FAIL (GPU hang, no teardown)\n");
        fflush(stdout);
        _exit(1);
    }

    step("teardown");
    vkDestroyCommandPool(c.dev, c.pool, NULL);
    vkDestroyDevice(c.dev, NULL);
    vkDestroyInstance(inst, NULL);
    int ok = !render_failed && !compute_failed;
    printf("VKCHECK-RESULT: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
