(function () {
  "use strict";
  // geosleuth --online-map. Runs only where Leaflet loaded; offline, or when the CDN is blocked, it
  // does nothing and throws nothing, and the drawn map above is the whole map. Labels come from the
  // photo, a VLM or a file name: they are set as text (textContent), never parsed as HTML.
  var TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";
  var ATTRIBUTION = '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors';
  var COLOURS = { best: "#b3261e", alt: "#1f5fa8", region: "#b3261e" };

  function text(value) {
    var span = document.createElement("span");
    span.textContent = String(value);
    return span;
  }

  function draw(L, box, data) {
    box.hidden = false;
    var map = L.map(box, { scrollWheelZoom: false, worldCopyJump: true });
    L.tileLayer(TILES, { maxZoom: 19, attribution: ATTRIBUTION }).addTo(map);
    var frame = null; // what the view must hold (computed without the map, which has no view yet)
    function extend(lat, lon, radiusKm) {
      var bounds = L.latLng(lat, lon).toBounds(radiusKm * 2000);
      frame = frame ? frame.extend(bounds) : bounds;
    }
    (data.regions || []).forEach(function (region) {
      region.circles.forEach(function (c) {
        var circle = L.circle([c.lat, c.lon], {
          radius: c.radius_km * 1000, color: COLOURS.region, weight: 1,
          fillOpacity: region.level >= 95 ? 0.08 : region.level >= 80 ? 0.12 : 0.2,
          className: "gs-region gs-r" + region.level
        }).addTo(map);
        circle.bindTooltip(text(region.level + "% region"), { sticky: true });
        extend(c.lat, c.lon, c.radius_km);
      });
    });
    (data.alternatives || []).forEach(function (a) {
      L.circleMarker([a.lat, a.lon], {
        radius: 5, color: "#fff", weight: 1, fillColor: COLOURS.alt, fillOpacity: 1, className: "gs-alt"
      }).bindTooltip(text(a.label)).addTo(map);
    });
    var best = data.best;
    if (best) {
      L.circleMarker([best.lat, best.lon], {
        radius: 8, color: "#fff", weight: 2, fillColor: COLOURS.best, fillOpacity: 1, className: "gs-best"
      }).bindTooltip(text(best.label), { permanent: true, direction: "top", offset: [0, -8] }).addTo(map);
      // enough around the point to recognise where it is, as the drawn map's answer view does
      extend(best.lat, best.lon, Math.max(best.radius_km, 1) * 3);
    }
    if (frame) {
      map.fitBounds(frame, { padding: [12, 12], maxZoom: 16 });
    } else {
      map.setView([20, 0], 1);
    }
  }

  function start() {
    var L = window.L;
    var box = document.getElementById("online-map");
    var source = document.getElementById("online-map-data");
    if (!L || typeof L.map !== "function" || !box || !source) {
      return;
    }
    try {
      draw(L, box, JSON.parse(source.textContent));
      var note = document.getElementById("online-map-offline");
      if (note) {
        note.hidden = true;
      }
    } catch (e) {
      box.hidden = true; // never half a map: the drawn one above is complete
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
