// The Qwen-Image nodes in the frontend: inputs the chosen model does not take are hidden,
// saved workflows keep their values in the right widgets, and a badge over the title shows
// what a run will cost.
//
// What to hide for which model, and the prices, come from the node definition (the "model"
// combo's "qwen_image" option, built by the pack from its model table), never from this file.
// Hidden widgets stay in node.widgets, in their places: saved workflows store widget values
// by position. Without this extension the node still runs and ignores those inputs, with a
// note in 'info'.
import { app } from "../../scripts/app.js";

const OPTION = "qwen_image";
const SAVED = "qwen_image_saved_values"; // node property: how many values a save holds
const STATUS = "$$node-text-preview"; // the frontend's status text widget (it saves its value)
const IGNORED = " (ignored)";
const WIDGET_TYPES = ["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"];

function findWidget(node, name) {
  return node.widgets?.find((widget) => widget.name === name);
}

// The model whose inputs to show, or null when it is not known here: written into
// custom_model (the pack does not know its inputs) or given by a link.
function chosenModel(node) {
  const custom = findWidget(node, "custom_model");
  if (custom && String(custom.value ?? "").trim()) return null;
  const model = findWidget(node, "model");
  const linked = node.inputs?.some((slot) => slot.widget?.name === "model" && slot.link != null);
  return model && !linked ? model.value : null;
}

function setShown(node, widget, shown) {
  if (typeof node.isWidgetVisible === "function") {
    // Frontends that know hidden widgets skip them when drawing, hit-testing and sizing.
    if (!widget.hidden === shown) return false;
    widget.hidden = !shown;
    if (widget.options) widget.options.hidden = !shown; // read by the Vue node renderer
    return true;
  }
  // Older frontends draw every widget: mark the ignored ones instead.
  const base = (widget.label ?? widget.name).replace(IGNORED, "");
  const label = shown ? base : base + IGNORED;
  if (widget.label === label || (shown && widget.label === undefined)) return false;
  widget.label = label;
  return true;
}

// An input image socket the model does not take is removed while nothing is connected
// to it, and added back (at the end: links are kept by name) when a model takes it.
function setSocket(node, name, type, shown) {
  const index = node.inputs?.findIndex((slot) => slot.name === name) ?? -1;
  if (!shown && index >= 0 && node.inputs[index].link == null) {
    node.qwenImageSockets[name] = node.inputs[index];
    node.removeInput(index);
    return true;
  }
  if (shown && index < 0) {
    const { shape, label, localized_name } = node.qwenImageSockets[name] ?? {};
    node.addInput(name, type, { shape, label, localized_name });
    return true;
  }
  return false;
}

function refresh(node, table, sockets) {
  const model = chosenModel(node);
  const applies = model == null ? null : table.applies[model];
  // The room the user gave the node beyond its minimum (e.g. for the prompt) is kept.
  const slack = node.computeSize ? Math.max(0, node.size[1] - node.computeSize()[1]) : null;
  let changed = false;
  for (const name of table.depends) {
    const shown = !applies || applies.includes(name);
    const widget = findWidget(node, name);
    if (!widget) {
      if (name in sockets) changed = setSocket(node, name, sockets[name], shown) || changed;
      continue;
    }
    for (const each of [widget, ...(widget.linkedWidgets ?? [])]) {
      changed = setShown(node, each, shown) || changed;
    }
  }
  if (!changed) return;
  if (slack !== null && node.setSize) node.setSize([node.size[0], node.computeSize()[1] + slack]);
  node.setDirtyCanvas?.(true, true);
}

function watch(node, name, refreshNode) {
  const widget = findWidget(node, name);
  if (!widget) return;
  const callback = widget.callback;
  widget.callback = function (...args) {
    const result = callback?.apply(this, args);
    refreshNode();
    return result;
  };
}

// The values a save holds: every widget's but the status text's.
function savedWidgets(node) {
  return (node.widgets ?? []).filter((w) => w.serialize !== false && w.name !== STATUS);
}

// -- the cost before running ------------------------------------------------------------------
// table.cost holds every price, size and region (nodes/prices.py); this only multiplies,
// like api/pricing.py's estimate_usd: n outputs at the size's tier plus the input images.

function takes(table, model, name) {
  return !table.depends.includes(name) || table.applies[model].includes(name);
}

function dollars(amount) {
  // As the node's summary after the run: cents, or two significant digits below ten cents.
  return "$" + (amount >= 0.1 ? amount.toFixed(2) : String(Number(amount.toPrecision(2))));
}

// Size "match input": the area the node asks (nodes/placement.py), image 1's own within
// the model's range; the model's default where it asks no size; null (the upper tier, as
// booked) while image 1's size is unknown here, or with a mask (its region's size).
function matchPixels(node, cost, model, n) {
  const range = cost.match.areas[model];
  if (range == null || (n !== 1 && cost.match.n1_only.includes(model))) {
    return cost.auto_pixels[model];
  }
  if (node.inputs?.some((slot) => slot.name === "mask" && slot.link != null)) return null;
  const slot = node.inputs?.findIndex((input) => input.name === "image") ?? -1;
  const picture = slot >= 0 ? node.getInputNode?.(slot)?.imgs?.[0] : null;
  if (!picture?.naturalWidth) return null;
  const [low, high] = range;
  const area = picture.naturalWidth * picture.naturalHeight;
  return Math.min(Math.max(area, low ?? 0), high ?? Infinity);
}

function costText(node, table) {
  const cost = table.cost;
  const model = chosenModel(node);
  const prices = model == null ? null : cost.prices[model];
  if (!prices) return "cost unknown for this model";
  let region = cost.regions[findWidget(node, "region")?.value];
  let note = "";
  if (!region) {  // "default": where a run goes without a region chosen
    region = cost.default_region ?? cost.fallback_region;
    if (!cost.default_region) note = " (assumed)";  // DASHSCOPE_API_REGION names no region
  }
  const place = cost.region_names[region] + note;
  const price = prices[region];
  if (!price) return `no published price in ${place}`;
  const value = (name, otherwise) =>
    takes(table, model, name) ? findWidget(node, name)?.value ?? otherwise : otherwise;
  const size = value("size", null);
  const n = value("n", 1);
  const pixels = size === cost.custom ? value("width", 0) * value("height", 0)
    : cost.match && size === cost.match.choice ? matchPixels(node, cost, model, n)
    : cost.sizes[size] ?? cost.auto_pixels[model];
  const upper = pixels == null || pixels > cost.tier_max_pixels;
  const output = upper && price.output_2k != null ? price.output_2k : price.output;
  const inputs = (node.inputs ?? []).filter((slot) => slot.type === "IMAGE" && slot.link != null);
  const perCall = output * n + price.input * inputs.length;
  // Tiered prices with a size the model picks: the upper tier, as the spend guard books it.
  const about = pixels == null && price.output_2k != null && price.output_2k !== price.output
    ? "up to " : "≈ ";
  const batch = findWidget(node, "batch");
  if (!batch) return `${about}${dollars(perCall)} per edit · ${place}`;  // edits: image's batch
  const images = batch.value * n;
  return `${about}${dollars(perCall * batch.value)} · ${images} image${images === 1 ? "" : "s"}` +
    ` · ${place}`;
}

// Drawn over the title like the frontend's own badges (its LGraphBadge is not exported to
// extensions), in the colours of the node's other badges.
function costBadge(node, table) {
  const others = (node.badges ?? []).filter((b) => b !== node.qwenImageBadge)
    .map((b) => (typeof b === "function" ? b() : b));
  const { fgColor = "#ddd", bgColor = "#353535" } = others.find((b) => b?.bgColor) ?? {};
  return {
    text: costText(node, table), fgColor, bgColor, fontSize: 12, padding: 6, height: 20,
    visible: true,
    getWidth(ctx) {
      const font = ctx.font;
      ctx.font = `${this.fontSize}px sans-serif`;
      const width = ctx.measureText(this.text).width + 2 * this.padding;
      ctx.font = font;
      return width;
    },
    draw(ctx, x, y) {
      ctx.save();
      ctx.font = `${this.fontSize}px sans-serif`;
      ctx.fillStyle = this.bgColor;
      ctx.beginPath();
      ctx.roundRect ? ctx.roundRect(x, y, this.getWidth(ctx), this.height, 5)
        : ctx.rect(x, y, this.getWidth(ctx), this.height);
      ctx.fill();
      ctx.fillStyle = this.fgColor;
      ctx.textBaseline = "middle";
      ctx.textAlign = "left";
      ctx.fillText(this.text, x + this.padding, y + this.height / 2 + 1);
      ctx.restore();
    },
  };
}

app.registerExtension({
  name: "QwenImageDashScope.ModelInputs",
  beforeRegisterNodeDef(nodeType, nodeData) {
    const table = nodeData?.input?.required?.model?.[1]?.[OPTION];
    if (!table) return;
    // Socket types by name, for the inputs that are no widget (input images).
    const sockets = {};
    for (const [name, [type]] of Object.entries({ ...nodeData.input.optional })) {
      if (typeof type === "string" && !WIDGET_TYPES.includes(type)) sockets[name] = type;
    }
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const result = created?.apply(this, args);
      // The values a fresh node has: what a widget holds when a save has none for it.
      this.qwenImageDefaults = savedWidgets(this).map((widget) => widget.value);
      this.qwenImageSockets = {}; // removed sockets, to add back alike
      this.qwenImageRefresh = () => refresh(this, table, sockets);
      watch(this, "model", this.qwenImageRefresh);
      watch(this, "custom_model", this.qwenImageRefresh);
      this.qwenImageRefresh();
      // Built on every draw, so it follows each widget and link as it changes.
      this.qwenImageBadge = () => costBadge(this, table);
      this.badges = [this.qwenImageBadge, ...(this.badges ?? [])];
      return result;
    };
    // Loading sets the widget values by position, without calling their callbacks.
    const configured = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (info, ...rest) {
      const result = configured?.apply(this, [info, ...rest]);
      // A save holds values for its own widgets only. One of the first release (before
      // this extension) may end with the status text, which the frontend just gave to the
      // first widget added since: those widgets get their defaults back.
      const values = info?.widgets_values?.length ?? 0;
      const first = table.first_release_values;
      const held = info?.properties?.[SAVED] ?? (values <= first + 1 ? first : values);
      savedWidgets(this).forEach((widget, index) => {
        if (index >= held && index < this.qwenImageDefaults.length) {
          widget.value = this.qwenImageDefaults[index];
        }
      });
      this.qwenImageRefresh();
      return result;
    };
    const serialized = nodeType.prototype.onSerialize;
    nodeType.prototype.onSerialize = function (data, ...rest) {
      const result = serialized?.apply(this, [data, ...rest]);
      const status = this.widgets?.findIndex((widget) => widget.name === STATUS) ?? -1;
      if (status >= 0 && Array.isArray(data.widgets_values)) {
        data.widgets_values.splice(status, 1); // the status text is no setting
      }
      data.properties = { ...data.properties, [SAVED]: savedWidgets(this).length };
      return result;
    };
    const connections = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function (...args) {
      const result = connections?.apply(this, args);
      // After the frontend's own bookkeeping of this change (and not while building).
      if (this.qwenImageRefresh) queueMicrotask(this.qwenImageRefresh);
      return result;
    };
  },
});
