// The Qwen-Image nodes in the frontend: inputs the chosen model does not take are hidden,
// and saved workflows keep their values in the right widgets.
//
// What to hide for which model comes from the node definition (the "model" combo's
// "qwen_image" option, built by the pack from its model table), never from this file.
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
