// img2img's size for HiDiffusion's Auto display. In the "Resize by" tab the webui scales the source image,
// whose size only the page knows (the webui's own preview of that tab reads it the same way), so the image's
// size replaces the hidden Width/Height; in "Resize to" the scale is 1. Every other input passes unchanged.
function hidiffusionImg2imgSize(width, height, scale, ...rest) {
    var resizeBy = gradioApp().getElementById('img2img_tab_resize_by');
    if (resizeBy && resizeBy.style.display != 'none') {
        var source = currentImg2imgSourceResolution(width, height, scale);
        return [source[0], source[1], scale, ...rest];
    }
    return [width, height, 1, ...rest];
}
